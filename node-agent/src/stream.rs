//! The Connect stream: hello, heartbeats at the interval the server asks,
//! commands, and reconnection with backoff across the configured servers;
//! around it, getting (back) in: enrolling when the agent has no identity,
//! when its certificate expired, when the control plane refused it or asked
//! it to enroll again — each time only with a token it has not spent.
//!
//! A refusal (see `refusal`) is not retried in a loop: the agent logs what
//! the operator must do, shows the reason in its metrics and tries again at
//! its longest backoff.

use std::{
    collections::HashSet,
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

use crate::{
    backoff::Backoff,
    config::NodeName,
    enroll::{self, EnrollError},
    facts::HeartbeatSource,
    k3s::{self, JoinHook, Readiness},
    metrics::AgentMetrics,
    refusal::Refusal,
    state::{self, Credentials, K3sJoin, StateDir},
    tls::{self, ClientIdentity, Trust},
    token::TokenSource,
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
    /// Where enrollment tokens come from.
    pub token: TokenSource,
    /// Trust for an enrollment without a saved CA (the pin or the CA file);
    /// with credentials the saved CA is used. None: only re-enrollment.
    pub enroll_trust: Option<Trust>,
    /// The K3s join hook, retried until it succeeds; the worker reports
    /// ready only after that. None: no hook, always ready (the swarm, and
    /// agents already on a node of the cluster).
    pub k3s: Option<JoinHook>,
    /// The Kubernetes node this agent runs on (`--kubernetes-node`), named
    /// in each hello. None: the node, if any, is the one the join hook
    /// makes, which carries the worker-id label instead.
    pub kubernetes_node: Option<NodeName>,
    /// Longest backoff; refused agents retry at about this pace.
    pub max_backoff: Duration,
    /// The agent's metrics.
    pub metrics: Arc<AgentMetrics>,
    /// Where heartbeat figures come from.
    pub heartbeats: HeartbeatSource,
    /// Backups and restores of volumes on this node; None: not taken (the
    /// swarm).
    pub transfers: Option<Arc<crate::transfers::Transfers>>,
}

/// How one stream ended.
#[derive(Debug)]
enum SessionEnd {
    /// Shutdown was requested; the stream was closed cleanly.
    Shutdown,
    /// The server closed the stream or the connection broke.
    Lost(String),
    /// The control plane refused this worker's certificate.
    Refused(Refusal),
    /// The control plane asked the agent to enroll again.
    ReEnroll,
}

/// How an attempt to enroll went.
enum Attempt {
    Enrolled(Box<(Credentials, K3sJoin)>),
    /// No token the agent has not spent (or had refused).
    NoToken,
    Refused(Refusal),
    /// Kept out until an administrator decides; the server's words.
    AwaitingApproval(String),
    Failed(anyhow::Error),
}

/// Enrolls with the first unspent token, if there is one, presenting
/// `creds` (and trusting their CA) when there are credentials.
async fn try_enroll(
    cfg: &StreamConfig,
    creds: Option<&Credentials>,
    refused_tokens: &mut HashSet<String>,
) -> anyhow::Result<Attempt> {
    let trust = match (creds, &cfg.enroll_trust) {
        (Some(c), _) => Trust::CaPem(c.ca_pem.clone()),
        (None, Some(t)) => t.clone(),
        (None, None) => {
            return Ok(Attempt::Failed(anyhow::anyhow!(
                "not enrolled and no CA to trust: give --ca-hash (or --ca-file)"
            )));
        }
    };
    let Some(token) = cfg.token.unspent(&cfg.state, refused_tokens)? else {
        return Ok(Attempt::NoToken);
    };
    Ok(
        match enroll::enroll(
            &cfg.servers,
            &trust,
            &token,
            cfg.facts.clone(),
            &cfg.state,
            creds,
        )
        .await
        {
            Ok(done) => Attempt::Enrolled(Box::new(done)),
            Err(EnrollError::Refused(r)) => {
                // The same token will be refused again: not in this run.
                refused_tokens.insert(token.hash());
                Attempt::Refused(r)
            }
            Err(EnrollError::AwaitingApproval(m)) => Attempt::AwaitingApproval(m),
            Err(EnrollError::Failed(e)) => Attempt::Failed(e),
        },
    )
}

/// Holds a stream to one of the servers until `shutdown` turns true,
/// reconnecting after any failure with jittered backoff, moving to the next
/// server each time. Enrolls first when `creds` is None (or expired), and
/// again when the control plane refuses or asks for it, with a token the
/// agent has not spent; runs the K3s join hook (`cfg.k3s`) after each
/// enrollment and retries it until it succeeds.
pub async fn run(
    cfg: StreamConfig,
    creds: Option<Credentials>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let initial = match &cfg.k3s {
        Some(_) => cfg.state.k3s_join()?,
        None => None,
    };
    let (settings_tx, settings_rx) = watch::channel(initial.clone());
    let (readiness_tx, readiness) = watch::channel(Readiness::of(initial.as_ref()));
    let readiness_tx = Arc::new(readiness_tx);
    let joiner = cfg.k3s.clone().map(|hook| {
        tokio::spawn(k3s::keep_joined(
            hook,
            cfg.state.clone(),
            settings_rx,
            readiness_tx.clone(),
            cfg.max_backoff,
        ))
    });
    let k3s = K3sHandles {
        settings: settings_tx,
        readiness: readiness_tx,
    };
    let result = run_loop(&cfg, creds, shutdown, &k3s, &readiness).await;
    if let Some(j) = joiner {
        j.abort();
    }
    result
}

/// How the stream loop hands new K3s settings to the hook's task.
struct K3sHandles {
    settings: watch::Sender<Option<K3sJoin>>,
    readiness: Arc<watch::Sender<Readiness>>,
}

impl K3sHandles {
    /// After an enrollment: runs the hook once before the stream comes up
    /// (so the first hello carries its result), then leaves retries to the
    /// hook's task.
    async fn joined(&self, cfg: &StreamConfig, mut join: K3sJoin) {
        let Some(hook) = &cfg.k3s else {
            return;
        };
        if let Err(e) = k3s::join_once(hook, &cfg.state, &mut join).await {
            tracing::error!(error = %e, "K3s join hook failed; the worker reports not ready and retries it");
        }
        self.readiness.send_replace(Readiness::of(Some(&join)));
        self.settings.send_replace(Some(join));
    }
}

async fn run_loop(
    cfg: &StreamConfig,
    mut creds: Option<Credentials>,
    mut shutdown: watch::Receiver<bool>,
    k3s: &K3sHandles,
    readiness: &watch::Receiver<Readiness>,
) -> anyhow::Result<()> {
    let machine_id = cfg.facts.machine_id.clone();
    let mut backoff = Backoff::new(Duration::from_millis(500), cfg.max_backoff);
    let mut server_index = 0usize;
    let mut refused_tokens = HashSet::new();
    // Why the current credentials do not get this worker in, if they don't.
    let mut blocked: Option<Refusal> = None;
    let mut asked_to_reenroll = false;
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        if let Some(c) = &creds {
            let expired = c.identity.expired_at(state::now());
            cfg.metrics
                .certificate_expires_at
                .store(c.identity.expires_at.max(0) as u64, Ordering::Relaxed);
            cfg.metrics
                .certificate_expired
                .store(u64::from(expired), Ordering::Relaxed);
            if expired && blocked.is_none() {
                blocked = Some(Refusal::CertificateExpired(c.identity.expires_at));
            }
        }
        if creds.is_none() || blocked.is_some() || asked_to_reenroll {
            match try_enroll(cfg, creds.as_ref(), &mut refused_tokens).await? {
                Attempt::Enrolled(done) => {
                    let (c, join) = *done;
                    cfg.metrics.enrollments.fetch_add(1, Ordering::Relaxed);
                    cfg.metrics.set_refused(None);
                    blocked = None;
                    asked_to_reenroll = false;
                    creds = Some(c);
                    backoff.reset();
                    k3s.joined(cfg, join).await;
                    continue;
                }
                Attempt::NoToken => {
                    if std::mem::take(&mut asked_to_reenroll) {
                        tracing::warn!(
                            "the control plane asked this agent to enroll again, but it has no unspent token; keeping its certificate"
                        );
                    }
                }
                Attempt::Refused(r) => {
                    tracing::error!(reason = r.reason(), action = %r.operator_action(&machine_id), "enrollment refused");
                    cfg.metrics.set_refused(Some(r.reason()));
                    // Asked to enroll again while the certificate still
                    // works: keep using it.
                    let keep_current = std::mem::take(&mut asked_to_reenroll)
                        && blocked.is_none()
                        && creds.is_some();
                    if !keep_current {
                        blocked = Some(r);
                    }
                }
                Attempt::AwaitingApproval(why) => {
                    // Not the agent's to fix, nor a passing fault: say what
                    // the operator must do, and ask again slowly with the
                    // same (unspent) token.
                    cfg.metrics
                        .set_refused(Some(crate::enroll::WORKER_NAME_TAKEN));
                    let delay = backoff.slow_delay();
                    tracing::error!(reason = crate::enroll::WORKER_NAME_TAKEN, retry_in = ?delay,
                        "enrollment refused until an administrator decides: {why}");
                    wait(delay, &mut shutdown).await;
                    continue;
                }
                Attempt::Failed(e) => {
                    tracing::warn!(error = %format!("{e:#}"), next_ceiling = ?backoff.ceiling(), "enrollment failed; retrying");
                    wait(backoff.next_delay(), &mut shutdown).await;
                    // Asked to enroll again while the certificate still
                    // works: connect with it; the control plane can ask
                    // again. Otherwise there is no way in but enrolling.
                    let usable = creds
                        .as_ref()
                        .is_some_and(|c| !c.identity.expired_at(state::now()));
                    if !(std::mem::take(&mut asked_to_reenroll) && blocked.is_none() && usable) {
                        continue;
                    }
                }
            }
        }
        let usable = creds
            .as_ref()
            .is_some_and(|c| !c.identity.expired_at(state::now()));
        if let Some(r) = &blocked {
            cfg.metrics.set_refused(Some(r.reason()));
            let delay = backoff.slow_delay();
            tracing::error!(
                reason = r.reason(),
                action = %r.operator_action(&machine_id),
                retry_in = ?delay,
                "{r}; this agent cannot get in"
            );
            wait(delay, &mut shutdown).await;
            if !usable {
                // Only a token can help; look for one again.
                continue;
            }
            // Else try the stream again, slowly: an operator may have
            // lifted the refusal.
        }
        let Some(c) = creds.as_mut().filter(|_| usable) else {
            let delay = backoff.slow_delay();
            tracing::error!(retry_in = ?delay, "not enrolled and no unspent enrollment token: give the agent one (--token-file or MINISPOD_TOKEN)");
            wait(delay, &mut shutdown).await;
            continue;
        };
        let server = cfg.servers[server_index % cfg.servers.len()].clone();
        let mut up_since = None;
        let end = session(cfg, &server, c, readiness, &mut shutdown, &mut up_since)
            .await
            .unwrap_or_else(|e| SessionEnd::Lost(format!("{e:#}")));
        cfg.metrics.stream_up.store(0, Ordering::Relaxed);
        if !matches!(end, SessionEnd::Shutdown) {
            cfg.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        if up_since.is_some() {
            // The control plane let this worker in.
            blocked = None;
        }
        // A stream that lived a while resets the backoff: its loss is news,
        // not one more failure of a series.
        if up_since.is_some_and(|t: Instant| t.elapsed() > Duration::from_secs(30)) {
            backoff.reset();
        }
        match end {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Refused(r) => {
                tracing::error!(%server, reason = r.reason(), action = %r.operator_action(&machine_id), "the control plane refused this worker");
                cfg.metrics.set_refused(Some(r.reason()));
                blocked = Some(r);
            }
            SessionEnd::ReEnroll => {
                tracing::warn!("the control plane asked this agent to enroll again");
                asked_to_reenroll = true;
            }
            SessionEnd::Lost(why) => {
                server_index += 1;
                tracing::warn!(%server, reason = %why, next_ceiling = ?backoff.ceiling(), "stream lost; reconnecting");
                wait(backoff.next_delay(), &mut shutdown).await;
            }
        }
    }
}

/// Sleeps `delay`, or until shutdown.
async fn wait(delay: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = tokio::time::sleep(delay) => {},
        _ = shutdown.changed() => {},
    }
}

/// The hello that opens each stream: the machine's facts, its readiness
/// and, for an agent that runs on a node of the cluster already, that
/// node's name (empty otherwise).
pub fn hello(
    facts: &pb::MachineFacts,
    readiness: Readiness,
    kubernetes_node: Option<&NodeName>,
) -> pb::Hello {
    pb::Hello {
        facts: Some(facts.clone()),
        ready: readiness.ready,
        k3s_join_error: readiness.join_error,
        kubernetes_node_name: kubernetes_node
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
    }
}

/// The end of a stream for a failed call: a refusal, or a lost stream.
fn ended_by(s: &tonic::Status) -> SessionEnd {
    match Refusal::from_status(s) {
        Some(r) => {
            tracing::warn!(code = ?s.code(), message = %s.message(), "the control plane refused this worker");
            SessionEnd::Refused(r)
        }
        None => SessionEnd::Lost(format!("{}: {}", s.code(), s.message())),
    }
}

async fn session(
    cfg: &StreamConfig,
    server: &str,
    creds: &mut Credentials,
    readiness: &watch::Receiver<Readiness>,
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
    let now_ready = || {
        let r = readiness.borrow().clone();
        cfg.metrics
            .k3s_joined
            .store(u64::from(r.ready), Ordering::Relaxed);
        r
    };
    let hello = ConnectRequest {
        message: Some(connect_request::Message::Hello(hello(
            &cfg.facts,
            now_ready(),
            cfg.kubernetes_node.as_ref(),
        ))),
    };
    tx.send(hello).await.context("queue hello")?;
    let mut inbound = match AgentServiceClient::new(channel.clone())
        .connect(ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return Ok(ended_by(&s)),
    };
    let welcome = match tokio::time::timeout(Duration::from_secs(15), inbound.message()).await {
        Err(_) => return Ok(SessionEnd::Lost("no welcome within 15 s".into())),
        Ok(Err(s)) => return Ok(ended_by(&s)),
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
    // In: whatever refusal kept the worker out no longer does.
    cfg.metrics.set_refused(None);
    cfg.metrics.stream_up.store(1, Ordering::Relaxed);
    cfg.metrics.connects.fetch_add(1, Ordering::Relaxed);
    // systemd (Type=notify): ready once the first stream is up.
    minispod_support::sd_notify("READY=1");
    // Transfers waiting for this worker (or cut short by a restart).
    claim_transfers(cfg, &channel, server, creds);
    let mut tick = tokio::time::interval(interval);
    tick.reset();
    let mut sampler = cfg.heartbeats.sampler();
    let renew_in =
        |c: &Credentials| Duration::from_secs((c.identity.renew_at() - state::now()).max(0) as u64);
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
                let beat = ConnectRequest { message: Some(connect_request::Message::Heartbeat(sampler.heartbeat(now_ready().ready))) };
                if tx.send(beat).await.is_err() {
                    return Ok(SessionEnd::Lost("request stream closed".into()));
                }
                cfg.metrics.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            () = &mut renewal => {
                // A copy into a directory destination presents the
                // certificate it started with: the scheduled renewal waits
                // for it, while a sixth of the certificate's life is left.
                let life = creds.identity.expires_at - creds.identity.issued_at;
                if cfg.transfers.as_ref().is_some_and(|t| t.through_control_plane() > 0)
                    && state::now() < creds.identity.expires_at - life / 6
                {
                    tracing::info!("certificate renewal put off while a transfer through the control plane runs");
                    renewal.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(600));
                    continue;
                }
                match enroll::renew(channel.clone(), creds, &cfg.state).await {
                    Ok(c) => {
                        cfg.metrics.renewals.fetch_add(1, Ordering::Relaxed);
                        cfg.metrics.certificate_expires_at.store(c.identity.expires_at.max(0) as u64, Ordering::Relaxed);
                        *creds = c;
                    }
                    Err(EnrollError::Refused(r)) => return Ok(SessionEnd::Refused(r)),
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
                        Some(pb::command::Command::RenewCertificate(true)) => renewal.as_mut().reset(tokio::time::Instant::now()),
                        Some(pb::command::Command::Reenroll(true)) => return Ok(SessionEnd::ReEnroll),
                        Some(pb::command::Command::TransfersPending(true)) => claim_transfers(cfg, &channel, server, creds),
                        _ => {}
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok(SessionEnd::Lost("the server closed the stream".into())),
                Err(s) => return Ok(ended_by(&s)),
            }
        }
    }
}

/// Claims the worker's transfers in the background, if it takes any, over
/// `channel` to `server` (where a directory destination is reached, with
/// `creds`).
fn claim_transfers(
    cfg: &StreamConfig,
    channel: &tonic::transport::Channel,
    server: &str,
    creds: &Credentials,
) {
    if let Some(t) = &cfg.transfers {
        let (t, channel) = (t.clone(), channel.clone());
        let link = crate::transfers::Link {
            server: server.to_owned(),
            cert_pem: creds.cert_pem.clone(),
            key_pem: creds.key_pem.clone(),
            ca_pem: creds.ca_pem.clone(),
        };
        tokio::spawn(async move {
            if let Err(e) = t.claim(channel, link).await {
                tracing::warn!(error = %format!("{e:#}"), "claiming transfers failed; the control plane asks again");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> pb::MachineFacts {
        pb::MachineFacts {
            hostname: "node-a".into(),
            machine_id: "m1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_hello_names_the_node_of_an_agent_inside_the_cluster() {
        let node: NodeName = "node-a".parse().unwrap();
        let ready = Readiness {
            ready: true,
            join_error: String::new(),
        };
        let h = hello(&facts(), ready.clone(), Some(&node));
        assert_eq!(h.kubernetes_node_name, "node-a");
        assert!(h.ready && h.k3s_join_error.is_empty());
        assert_eq!(h.facts, Some(facts()));
        // An agent that joins K3s itself leaves the name empty: its node is
        // found by the worker-id label.
        let not_ready = Readiness {
            ready: false,
            join_error: "no k3s".into(),
        };
        let h = hello(&facts(), not_ready, None);
        assert_eq!(h.kubernetes_node_name, "");
        assert!(!h.ready && h.k3s_join_error == "no k3s");
    }
}
