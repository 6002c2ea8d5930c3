//! One agent stream, from hello to goodbye.
//!
//! `run` owns the stream: it waits for the hello, marks the worker online,
//! answers heartbeats, forwards administrators' commands, and when the
//! stream ends for any reason — EOF, reset, an HTTP/2 keepalive timeout, a
//! silence longer than the heartbeat deadline, or a newer stream replacing
//! it — marks the worker offline at once (unless a newer stream took over).

use std::{net::IpAddr, sync::Arc, time::Instant};

use minispod_proto::v1::{
    self as pb, ConnectRequest, ConnectResponse, connect_request, connect_response,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::{
    hub::{AgentOrder, FleetHub},
    limits::WorkerLimits,
    queries::{self as workers_db, HeartbeatMetrics, StateChange, StreamChange, WorkerRow},
};
use crate::{
    error::{AppError, AppResult},
    store::now_ms,
};

/// One message to the agent, or the status that ends its stream.
pub type Reply = Result<ConnectResponse, Status>;

/// The stream of replies to an agent, fed by its session task. Replies
/// travel boxed: a tokio channel allocates a block of 32 slots up front, and
/// 32 pointers take 1.2 KiB less per connected agent than 32 replies.
#[derive(Debug)]
pub struct Outbound(pub mpsc::Receiver<Box<Reply>>);

impl tokio_stream::Stream for Outbound {
    type Item = Reply;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Reply>> {
        self.0.poll_recv(cx).map(|reply| reply.map(|r| *r))
    }
}

/// Why a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The agent closed its side.
    Closed,
    /// The transport failed (reset, keepalive timeout, ...).
    Broken(String),
    /// No message within the heartbeat deadline.
    Silent,
    /// A newer stream of the same worker, or a deletion, replaced it.
    Replaced,
    /// The agent broke the protocol.
    Protocol(String),
}

/// Serves one stream of `worker` until it ends, then marks the worker
/// offline if this was still its current stream.
///
/// The task lives as long as the stream, one per agent, so it is kept
/// small: the worker's record and the inbound stream are boxed (the record
/// is freed once the worker is online), and so are the store calls, whose
/// futures would otherwise sit in every task (7.1 KiB per task before, see
/// BENCHMARKS.md).
pub fn run(
    hub: FleetHub,
    limits: Arc<WorkerLimits>,
    worker: WorkerRow,
    peer_ip: Option<IpAddr>,
    inbound: Streaming<ConnectRequest>,
    out: mpsc::Sender<Box<Reply>>,
) -> impl Future<Output = ()> + Send {
    serve(
        hub,
        limits,
        Box::new(worker),
        peer_ip,
        Box::new(inbound),
        out,
    )
}

async fn serve(
    hub: FleetHub,
    limits: Arc<WorkerLimits>,
    worker: Box<WorkerRow>,
    peer_ip: Option<IpAddr>,
    mut inbound: Box<Streaming<ConnectRequest>>,
    out: mpsc::Sender<Box<Reply>>,
) {
    let started = Instant::now();
    let worker_id = worker.id.clone();
    let reg = hub.register(&worker_id);
    let deadline = hub.config().silence_deadline();

    let mut opened = false;
    let reason = async {
        // The hello must come first, within the deadline.
        let hello = match tokio::time::timeout(deadline, inbound.message()).await {
            Err(_) => return EndReason::Silent,
            Ok(Err(e)) => return EndReason::Broken(e.message().to_owned()),
            Ok(Ok(None)) => return EndReason::Closed,
            Ok(Ok(Some(ConnectRequest {
                message: Some(connect_request::Message::Hello(h)),
            }))) => h,
            Ok(Ok(Some(_))) => return EndReason::Protocol("the first message must be a hello".into()),
        };
        // What the store holds from here on: the hello's readiness.
        let mut ready = hello.ready;
        let status = match Box::pin(go_online(&hub, worker, &reg.stream_id, peer_ip, hello)).await {
            Ok(row) => {
                hub.mark_claimed(&worker_id, reg.session_id);
                row.status
            }
            Err(e @ (AppError::PermissionDenied(_) | AppError::Refused { .. })) => {
                let m = e.to_string();
                let _ = out.send(Box::new(Err(Status::from(e)))).await;
                return EndReason::Protocol(m);
            }
            Err(e) => return EndReason::Broken(format!("store: {e}")),
        };
        hub.metrics().streams_opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        opened = true;
        let welcome = ConnectResponse {
            message: Some(connect_response::Message::Welcome(pb::Welcome {
                worker_id: worker_id.clone(),
                heartbeat_interval_seconds: hub.config().heartbeat_interval.as_secs().max(1) as i32,
                status: super::status::from_db(&status) as i32,
            })),
        };
        if out.send(Box::new(Ok(welcome))).await.is_err() {
            return EndReason::Closed;
        }
        loop {
            tokio::select! {
                mail = reg.mailbox.next() => match mail {
                    AgentOrder::Stop => return EndReason::Replaced,
                    AgentOrder::Commands(commands) => {
                        for command in commands {
                            let cmd = ConnectResponse {
                                message: Some(connect_response::Message::Command(pb::Command { command: Some(command) })),
                            };
                            if out.send(Box::new(Ok(cmd))).await.is_err() {
                                return EndReason::Closed;
                            }
                        }
                    }
                },
                msg = tokio::time::timeout(deadline, inbound.message()) => {
                    let beat = match msg {
                        Err(_) => return EndReason::Silent,
                        Ok(Err(e)) => return EndReason::Broken(e.message().to_owned()),
                        Ok(Ok(None)) => return EndReason::Closed,
                        Ok(Ok(Some(ConnectRequest { message: Some(connect_request::Message::Heartbeat(b)) }))) => b,
                        Ok(Ok(Some(_))) => return EndReason::Protocol("expected a heartbeat".into()),
                    };
                    // Readiness is a status change: written at once, within
                    // the worker's limit. Over it, `ready` keeps the stored
                    // value, so a later heartbeat writes the change once the
                    // limit allows: flapping costs a bounded number of writes
                    // and the record still ends up true.
                    if beat.ready != ready && limits.ready.take(&worker_id).is_ok() {
                        ready = beat.ready;
                        if let Err(e) = Box::pin(change_state(&hub, &worker_id, StateChange { ready: Some(ready), ..Default::default() })).await {
                            return EndReason::Broken(format!("store: {e}"));
                        }
                    }
                    hub.record_heartbeat(&worker_id, metrics_of(&beat));
                    let ack = ConnectResponse {
                        message: Some(connect_response::Message::Ack(pb::HeartbeatAck { sequence: beat.sequence })),
                    };
                    if out.send(Box::new(Ok(ack))).await.is_err() {
                        return EndReason::Closed;
                    }
                }
            }
        }
    }
    .await;

    if opened {
        hub.metrics()
            .streams_closed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    if hub.unregister(&worker_id, reg.session_id) {
        match Box::pin(change_state(
            &hub,
            &worker_id,
            StateChange {
                online: Some(false),
                stream: StreamChange::Close {
                    stream: &reg.stream_id,
                },
                ..Default::default()
            },
        ))
        .await
        {
            Ok(Some(_)) => {
                tracing::info!(worker_id, ?reason, held_for = ?started.elapsed(), "worker offline")
            }
            Ok(None) => {
                tracing::debug!(
                    worker_id,
                    ?reason,
                    "stream ended; another stream holds the worker"
                )
            }
            Err(e) => tracing::error!(worker_id, error = %e, "could not mark worker offline"),
        }
    } else {
        tracing::debug!(worker_id, ?reason, "stream ended after being replaced");
    }
}

/// Applies a state change at once and tells watchers.
pub async fn change_state(
    hub: &FleetHub,
    worker_id: &str,
    change: StateChange<'_>,
) -> AppResult<Option<WorkerRow>> {
    let mut tx = hub.db().begin().await?;
    let row = workers_db::apply_state(&mut tx, worker_id, change).await?;
    tx.commit().await?;
    if let Some(row) = &row {
        hub.publish(row);
    }
    Ok(row)
}

async fn go_online(
    hub: &FleetHub,
    worker: Box<WorkerRow>,
    stream_id: &str,
    peer_ip: Option<IpAddr>,
    hello: pb::Hello,
) -> AppResult<WorkerRow> {
    let mut facts = hello.facts.unwrap_or_default();
    super::enrollment::validate_facts(&facts)
        .map_err(|e| AppError::PermissionDenied(format!("hello: {e}")))?;
    if facts.machine_id != worker.machine_id {
        // The certificate belongs to another machine: a copied identity.
        return Err(AppError::PermissionDenied(
            "this certificate was issued to another machine".into(),
        ));
    }
    if facts.ip_address.is_empty() {
        facts.ip_address = peer_ip.map(|i| i.to_string()).unwrap_or_default();
    }
    let mut tx = hub.db().begin().await?;
    if !workers_db::write_facts(
        &mut tx,
        &worker.id,
        &facts,
        Some(&truncate(hello.kubernetes_node_name.trim(), 253)),
    )
    .await?
    {
        // Names are unique: a host renamed to another worker's name keeps
        // the worker's name (the stream stays up).
        tracing::warn!(worker_id = %worker.id, name = %worker.name, hostname = %facts.hostname,
            "the machine's host name is another worker's name: the worker keeps its name");
    }
    workers_db::set_join_error(&mut tx, &worker.id, &truncate(&hello.k3s_join_error, 2000)).await?;
    let row = workers_db::apply_state(
        &mut tx,
        &worker.id,
        StateChange {
            online: Some(true),
            ready: Some(hello.ready),
            stream: StreamChange::Open {
                replica: hub.replica_id(),
                stream: stream_id,
            },
            ..Default::default()
        },
    )
    .await?
    .ok_or_else(|| {
        AppError::refused(
            tonic::Code::PermissionDenied,
            super::enrollment::reason::WORKER_REMOVED,
            "an administrator deleted this worker",
        )
    })?;
    tx.commit().await?;
    hub.publish(&row);
    tracing::info!(worker_id = %row.id, name = %row.name, status = %row.status, "worker online");
    Ok(row)
}

fn metrics_of(b: &pb::Heartbeat) -> HeartbeatMetrics {
    let a = b.allocatable.unwrap_or_default();
    HeartbeatMetrics {
        cpu_used_percent: if b.cpu_used_percent.is_finite() {
            b.cpu_used_percent.clamp(0.0, 100.0)
        } else {
            0.0
        },
        memory_used_bytes: b.memory_used_bytes.max(0),
        storage_used_bytes: b.storage_used_bytes.max(0),
        pod_count: i64::from(b.pod_count.max(0)),
        allocatable_cpu_millicores: a.cpu_millicores.max(0),
        allocatable_memory_bytes: a.memory_bytes.max(0),
        allocatable_storage_bytes: a.storage_bytes.max(0),
        allocatable_pods: a.pods.max(0),
        at: now_ms(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
