//! The second half of start-up: serving what `build` made, then the
//! drain and the stop.

use std::{future::Future, time::Duration};

use anyhow::Context;
use tokio_rustls::TlsAcceptor;
use tonic::transport::Server;

use crate::{
    console::ConsoleLayer,
    telemetry::RpcTraceLayer,
    transport::{Gate, RequestBuffer, RequestBufferLayer, plain_incoming, tls_incoming},
};

use super::{
    build::{Application, Connections},
    health::API_SERVICES,
    router::{MAX_HEADER_LIST_BYTES, MAX_LOCAL_ERROR_RESETS},
    tasks::Tasks,
};

/// How long shutdown waits for connections to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the background tasks to stop once cancelled.
const TASKS_STOP_TIMEOUT: Duration = Duration::from_secs(2);

impl Application {
    /// Serves until SIGTERM or SIGINT.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let signal = shutdown_signal();
        self.run_until(signal).await
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets calls in
    /// flight finish, stops the background tasks and closes the store.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Application {
            listener,
            local_addr: _,
            tls,
            console_listener,
            metrics_addr: _,
            pki: _,
            routes,
            access,
            connections:
                Connections {
                    keepalive_interval,
                    keepalive_timeout,
                    limits,
                    cors,
                },
            health,
            metrics,
            db,
            hub,
            replica,
            replica_tasks,
            loops,
        } = self;
        let console_addr = console_listener.as_ref().and_then(|l| l.local_addr().ok());
        for name in API_SERVICES {
            health
                .set_service_status(name, tonic_health::ServingStatus::Serving)
                .await;
        }
        let tasks = Tasks::default();
        let downloads = loops.backups.clone();
        let repositories =
            crate::backups::rest::RestServer::new(loops.backups.clone(), loops.enrollment.clone());
        loops.spawn(&tasks);

        let gate = Gate::new(limits.clone());
        let request_buffer = RequestBuffer::new(limits.max_request_buffer);
        let router = Server::builder()
            .accept_http1(true)
            .http2_keepalive_interval(Some(keepalive_interval))
            .http2_keepalive_timeout(Some(keepalive_timeout))
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
            .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
            .tcp_nodelay(true)
            .layer(
                ConsoleLayer::new(console_addr)
                    .with_downloads(downloads)
                    .with_repositories(repositories)
                    .with_request_timeout(limits.request_timeout),
            )
            .layer(cors)
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(RequestBufferLayer(request_buffer))
            .layer(RpcTraceLayer::new(metrics))
            .layer(access)
            .add_routes(routes);

        // On shutdown, end the long-lived streams (agents, watchers) so the
        // connections drain; give them DRAIN_TIMEOUT, then stop regardless.
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let closing_hub = hub.clone();
        // systemd (Type=notify): ready now that the port is bound and the
        // store migrated; watchdog pings while serving.
        minispod_support::sd_notify("READY=1");
        if let Some(watchdog) = minispod_support::spawn_watchdog(|| true) {
            tasks.adopt("systemd watchdog", watchdog);
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopping_health = health.clone();
        let shutdown = async move {
            shutdown.await;
            minispod_support::sd_notify("STOPPING=1");
            // Probes and load balancers stop sending work before the drain.
            for name in API_SERVICES {
                stopping_health
                    .set_service_status(name, tonic_health::ServingStatus::NotServing)
                    .await;
            }
            closing_hub.close_all();
            let _ = stop_tx.send(true);
            let _ = signalled_tx.send(());
        };
        // The loopback console listener serves the same router without TLS
        // and stops with the main one.
        if let Some(l) = console_listener {
            let (router, mut stop) = (router.clone(), stop_rx.clone());
            let incoming = plain_incoming(l, gate.clone());
            tasks.spawn("console listener", async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = router.serve_with_incoming_shutdown(incoming, stopped).await {
                    tracing::warn!(error = %e, "console listener failed");
                }
            });
        }
        let drain_deadline = async {
            if signalled_rx.await.is_ok() {
                tokio::time::sleep(DRAIN_TIMEOUT).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let served = match tls {
            Some(config) => {
                let incoming = tls_incoming(listener, TlsAcceptor::from(config), gate.clone());
                tokio::select! {
                    r = router.serve_with_incoming_shutdown(incoming, shutdown) => r,
                    () = drain_deadline => { tracing::warn!("connections still open after the drain timeout; stopping anyway"); Ok(()) }
                }
            }
            None => {
                tokio::select! {
                    r = router.serve_with_incoming_shutdown(plain_incoming(listener, gate.clone()), shutdown) => r,
                    () = drain_deadline => { tracing::warn!("connections still open after the drain timeout; stopping anyway"); Ok(()) }
                }
            }
        };
        tasks.stop(TASKS_STOP_TIMEOUT).await;
        if let Err(e) = hub.flush_metrics().await {
            tracing::warn!(error = %e, "final heartbeat metrics flush failed");
        }
        replica_tasks.stop(&hub, Duration::from_secs(2)).await;
        if let Err(e) = replica.leave().await {
            tracing::warn!(error = %e, "could not leave the replicas");
        }
        db.close().await;
        tracing::info!("control plane stopped");
        served.context("serve")
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that comes
/// right after start-up is not lost to the default action.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    async move {
        let int = async {
            match &mut int {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let term = async {
            match &mut term {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = int => {},
            () = term => {},
        }
        tracing::info!("shutdown requested; draining");
    }
}
