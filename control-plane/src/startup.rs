//! Building and running the server: store, PKI, services, one port.
//!
//! `Application::build` does everything that can fail (open and migrate the
//! store, load the CA, bind the port, bootstrap the administrator) so errors
//! surface before the server claims to be up; `run_until` serves until the
//! shutdown future resolves, then drains in-flight calls.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderName, HeaderValue, Method};
use minispod_proto::v1 as pb;
use rand::RngCore;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::transport::Server;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{
    api::{self, subscriptions::CallerLimits},
    auth::{
        AuthState,
        password::PasswordHasher,
        queries as refresh_db,
        tokens::{AccessTokens, load_or_create_secret},
    },
    catalog::seed,
    cluster::{ClusterLink, LinkSettings},
    config::ServeArgs,
    console::ConsoleLayer,
    history::{HistorySettings, recorder::Recorder},
    mail::{Mail, MailSettings, RetryPolicy, smtp::SmtpUrl},
    metrics::{FleetGauges, Metrics},
    notifications::{Notifier, fleet::FleetNotices, incidents::Timing},
    pki::Pki,
    rate_limit::{LoginLimiter, LoginLimits, RateLimiter},
    store::{Db, StoreOptions, now_ms},
    subscriptions::{SubscriptionSettings, Subscriptions, logs::LogSlots, render::RenderSettings},
    telemetry::RpcTraceLayer,
    transport::{Gate, RequestBuffer, RequestBufferLayer, plain_incoming, tls_incoming},
    users::{
        fields::{Email, Password},
        queries as users_db,
    },
    workers::{
        enrollment::{Enrollment, EnrollmentConfig, Secret, StaticToken},
        hub::{FleetConfig, FleetHub},
        limits::{Rate, WorkerLimits},
        queries as workers_db,
        replicas::Replica,
    },
};

pub use crate::api::message_limits;

/// How long shutdown waits for connections to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often in-memory rate-limit buckets that refilled are forgotten.
const LIMITER_PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// Local errors (refused or malformed streams) a connection may cause
/// before it is closed with GOAWAY: the HTTP/2 reset-flood guard.
const MAX_LOCAL_ERROR_RESETS: usize = 256;
/// Largest header block a call may send.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// How history is kept, from `args`.
fn history_settings(args: &ServeArgs) -> anyhow::Result<HistorySettings> {
    let s = HistorySettings {
        fine_step: args.history_fine_step,
        fine_retention: args.history_fine_retention,
        coarse_step: args.history_coarse_step,
        coarse_retention: args.history_coarse_retention,
        // A step's last heartbeats reach the recorder with the next flush.
        grace: args.metrics_flush_interval + Duration::from_secs(1),
    };
    anyhow::ensure!(
        s.fine_step >= Duration::from_millis(100),
        "--history-fine-step must be at least 100ms"
    );
    anyhow::ensure!(
        s.coarse_step >= s.fine_step
            && s.coarse_step
                .as_millis()
                .is_multiple_of(s.fine_step.as_millis()),
        "--history-coarse-step must be a multiple of --history-fine-step"
    );
    anyhow::ensure!(
        s.fine_retention >= s.fine_step && s.coarse_retention >= s.fine_retention,
        "--history-fine-retention must be at least one fine step, and --history-coarse-retention at least as long"
    );
    Ok(s)
}

/// Per-user limits of the SubscriptionService from `args`.
fn subscription_limits(args: &ServeArgs, db: &crate::store::Db) -> CallerLimits {
    let per_minute = |n: u32| Duration::from_secs(60) / n.max(1);
    CallerLimits {
        changes: Arc::new(RateLimiter::for_store(
            db,
            "subscription_change",
            args.subscription_change_burst,
            per_minute(args.subscription_changes_per_minute),
        )),
        log_opens: Arc::new(RateLimiter::for_store(
            db,
            "subscription_logs",
            args.log_stream_burst,
            per_minute(args.log_streams_per_minute),
        )),
        log_slots: LogSlots::new(args.log_streams_per_user as usize),
        log_limit_bytes: args.log_stream_limit_bytes,
        caller_recheck: args.stream_caller_recheck.max(Duration::from_millis(10)),
    }
}

/// The mail settings of `args`; links point at `--public-url`, or at
/// this server (`bound`) by the name its certificate covers.
fn mail_settings(args: &ServeArgs, bound: SocketAddr) -> anyhow::Result<MailSettings> {
    let smtp_url = args
        .smtp_url
        .as_ref()
        .filter(|u| !u.is_empty())
        .map(|u| SmtpUrl::parse(u.expose()))
        .transpose()?;
    let public_url = match &args.public_url {
        Some(u) if !u.is_empty() => {
            anyhow::ensure!(
                u.starts_with("https://") || u.starts_with("http://"),
                "--public-url must start with https:// (or http://)"
            );
            u.clone()
        }
        _ => {
            let scheme = if args.plaintext { "http" } else { "https" };
            format!("{scheme}://localhost:{}", bound.port())
        }
    };
    Ok(MailSettings {
        smtp_url,
        smtp_ca_file: args.smtp_ca_file.clone(),
        from: args.mail_from.clone(),
        public_url,
        webhook_ca_file: args.webhook_ca_file.clone(),
        webhook_policy: crate::mail::webhook::WebhookPolicy {
            allow: args.webhook_allow_ranges.clone(),
            // The cluster's own ranges, as customer pods are refused them
            // (checked at start by their flags' parser), and the operator's.
            deny: args
                .webhook_deny_ranges
                .iter()
                .cloned()
                .chain(
                    [
                        &args.cluster_pod_cidrs,
                        &args.cluster_service_cidrs,
                        &args.cluster_node_cidrs,
                    ]
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.parse().ok()),
                )
                .collect(),
        },
        require_verification: args.require_email_verification,
        reset_ttl: args.password_reset_ttl,
        verify_ttl: args.email_verification_ttl,
        retry: RetryPolicy {
            initial: args.outbox_retry_initial,
            max: args.outbox_retry_max,
            max_attempts: args.outbox_max_attempts,
        },
    })
}

/// A built server, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    auth: AuthState,
    pki: Arc<Pki>,
    hub: FleetHub,
    replica: Replica,
    enrollment: Enrollment,
    notifier: Notifier,
    metrics: Arc<Metrics>,
    metrics_listener: Option<TcpListener>,
    console_listener: Option<TcpListener>,
    args: ServeArgs,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Opens the store, loads or creates the CA, bootstraps the
    /// administrator, seeds the catalog and binds the listening port.
    pub async fn build(args: ServeArgs) -> anyhow::Result<Application> {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("create data dir {}", args.data_dir.display()))?;
        // The database holds password hashes and the directory the keys.
        std::fs::set_permissions(
            &args.data_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .with_context(|| format!("restrict data dir {}", args.data_dir.display()))?;
        let store_options = StoreOptions {
            max_connections: args.database_max_connections,
            acquire_timeout: args.database_acquire_timeout,
            connect_timeout: args.database_connect_timeout,
        };
        let db = Db::connect(args.database_url.as_deref(), &args.data_dir, &store_options).await?;
        let pki = Arc::new(Pki::load_or_create(&args.data_dir, &args.tls_sans)?);
        let secret = load_or_create_secret(&args.data_dir.join("jwt.key"))?;
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hasher = PasswordHasher::new(
            args.max_concurrent_hashes.unwrap_or(cpus),
            args.max_queued_hashes,
        )?;
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listen on {}", args.listen))?;
        let mail = Mail::new(&mail_settings(&args, listener.local_addr()?)?)?;
        let auth = AuthState {
            db: db.clone(),
            tokens: Arc::new(AccessTokens::new(&secret, args.access_token_ttl)),
            refresh_ttl: args.refresh_token_ttl,
            session_max_age: args.session_max_age,
            hasher,
            limiter: Arc::new(LoginLimiter::for_store(
                &db,
                LoginLimits {
                    ip_burst: args.login_ip_burst,
                    ip_per_minute: args.login_ip_per_minute,
                    account_burst: args.login_account_burst,
                    account_per_hour: args.login_account_per_hour,
                },
            )),
            trusted_proxies: args.transport.trusted_proxies.clone().into(),
            registration_open: !args.close_registration,
            mail,
            // Three mails per address at once, then one every ten minutes.
            mail_limiter: Arc::new(RateLimiter::for_store(
                &db,
                "mail_address",
                3,
                Duration::from_secs(600),
            )),
        };
        bootstrap_admin(&auth, &args).await?;
        let seeded = seed::seed_once(&auth.db).await?;
        if seeded > 0 {
            tracing::info!(entries = seeded, "seeded the service catalog");
        }
        let metrics = Arc::new(Metrics::default());
        // Checked here, so a bad setting fails start-up, not the running server.
        history_settings(&args)?;
        anyhow::ensure!(
            args.heartbeat_interval >= Duration::from_secs(1),
            "--heartbeat-interval must be at least 1s: agents are told it in whole seconds"
        );
        let hub = FleetHub::new(
            auth.db.clone(),
            FleetConfig {
                heartbeat_interval: args.heartbeat_interval.max(Duration::from_millis(100)),
                missed_heartbeats: args.missed_heartbeats.max(1),
                metrics_flush_interval: args.metrics_flush_interval.max(Duration::from_millis(10)),
            },
            metrics.clone(),
        );
        // Join the replicas. Whatever no live replica holds (a crash left it
        // online; on SQLite, everything) is offline until its agent reconnects.
        let (replica, stale) = Replica::join(&hub, args.replica_lease).await?;
        if stale > 0 {
            tracing::info!(
                workers = stale,
                "marked workers without a live stream INACTIVE"
            );
        }
        let cluster = ClusterLink::connect(
            args.kubeconfig.as_deref(),
            args.kube_in_cluster,
            LinkSettings {
                offline_taint_grace: args.offline_taint_grace,
                offline_taint_after_start: args.offline_taint_after_start,
                backoff: crate::workqueue::Backoff {
                    base: args.kube_retry_base,
                    max: args.kube_retry_max,
                },
            },
        )
        .await?;
        hub.set_cluster(cluster.clone());
        let notifier = Notifier::new(auth.mail.clone());
        let enrollment = Enrollment::new(
            hub.clone(),
            pki.clone(),
            enrollment_config(&args)?,
            notifier.clone(),
        );
        enrollment.import_static_token().await?;

        let tls = if args.plaintext {
            None
        } else {
            Some(Arc::new(tls_config(&pki)?))
        };
        let metrics_listener = match args.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listen for metrics on {addr}"))?,
            ),
            None => None,
        };
        let console_listener = match args.console_listen {
            Some(addr) if !addr.ip().is_loopback() => anyhow::bail!(
                "--console-listen {addr}: only a loopback address may serve without TLS; \
                 reach the console remotely on the TLS port or through a proxy"
            ),
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listen for the console on {addr}"))?,
            ),
            None => None,
        };
        let local_addr = listener.local_addr()?;
        tracing::info!(
            addr = %local_addr,
            tls = tls.is_some(),
            ca_hash = %pki.ca_hash(),
            data_dir = %args.data_dir.display(),
            "control plane listening"
        );
        Ok(Application {
            listener,
            local_addr,
            tls,
            auth,
            pki,
            hub,
            replica,
            enrollment,
            notifier,
            metrics,
            metrics_listener,
            console_listener,
            args,
        })
    }

    /// Where the plaintext loopback console is served, when
    /// `--console-listen` is set.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Where `/metrics` is served, when `--metrics-listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The bound address (the real port when `--listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The CA pin of this server.
    pub fn ca_hash(&self) -> String {
        self.pki.ca_hash()
    }

    /// PEM of the CA certificate clients trust.
    pub fn ca_cert_pem(&self) -> String {
        self.pki.ca_cert_pem().to_owned()
    }

    /// Serves until SIGTERM or SIGINT.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets calls in
    /// flight finish and closes the store.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Application {
            listener,
            tls,
            auth,
            hub,
            replica,
            enrollment,
            notifier,
            metrics,
            metrics_listener,
            console_listener,
            args,
            pki,
            local_addr,
        } = self;
        let console_addr = console_listener.as_ref().and_then(|l| l.local_addr().ok());
        let replica_tasks = replica.spawn().await?;

        let (health, health_service) = tonic_health::server::health_reporter();
        for name in API_SERVICES {
            health
                .set_service_status(name, tonic_health::ServingStatus::Serving)
                .await;
        }
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(minispod_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("build reflection v1")?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(minispod_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .context("build reflection v1alpha")?;

        let cleanup = tokio::spawn(expire_refresh_tokens(auth.db.clone()));
        let mail_worker = auth
            .mail
            .spawn(auth.db.clone(), hub.replica_id().to_owned());
        let fleet_notices = FleetNotices::new(
            hub.clone(),
            notifier.clone(),
            Timing::new(
                args.notify_offline_grace,
                args.notify_not_ready_grace,
                args.notify_flap_window,
            )
            .started_at(now_ms()),
        )
        .spawn();
        let database_watch = tokio::spawn(report_database_health(auth.db.clone(), health.clone()));
        let metrics_server = metrics_listener.map(|l| {
            let (db, hub, metrics, mail) = (
                auth.db.clone(),
                hub.clone(),
                metrics.clone(),
                auth.mail.clone(),
            );
            let render: minispod_support::Render = Arc::new(move || {
                let (db, hub, metrics, mail) =
                    (db.clone(), hub.clone(), metrics.clone(), mail.clone());
                Box::pin(async move {
                    let workers = workers_db::counts_by_status(&db).await.unwrap_or_default();
                    let outbox = crate::mail::outbox::counts(db.read())
                        .await
                        .unwrap_or_default();
                    let c = mail.counters();
                    let load = |n: &std::sync::atomic::AtomicU64| {
                        n.load(std::sync::atomic::Ordering::Relaxed)
                    };
                    metrics.render(&FleetGauges {
                        workers,
                        streams_open: hub.online_count(),
                        cluster: hub.cluster().and_then(ClusterLink::gauges),
                        kube_api: hub
                            .cluster()
                            .filter(|c| c.is_linked())
                            .map(ClusterLink::api_stats),
                        outbox,
                        deliveries: (load(&c.sent), load(&c.attempt_failures), load(&c.given_up)),
                    })
                })
            });
            tokio::spawn(minispod_support::serve_metrics(l, render))
        });
        let flusher = hub.spawn_flusher();
        let cluster = hub.cluster().cloned().unwrap_or_else(ClusterLink::unlinked);
        let mut cluster_tasks = cluster.spawn_watches();
        cluster_tasks.extend(cluster.spawn_reconciler(hub.clone()));
        let subscriptions = Subscriptions::new(
            auth.db.clone(),
            cluster.clone(),
            SubscriptionSettings {
                render: RenderSettings {
                    apps_domain: args.apps_domain.clone(),
                    ingress_class: args.ingress_class.clone(),
                    cert_issuer: args.cert_issuer.clone(),
                    ingress_namespace: args.ingress_namespace.clone(),
                    cluster_cidrs: [
                        &args.cluster_pod_cidrs,
                        &args.cluster_service_cidrs,
                        &args.cluster_node_cidrs,
                    ]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect(),
                    control_plane_user: args.kube_user.clone(),
                    gate_image: args.gate_image.clone(),
                },
                volume_retention: args.volume_retention,
                resync: args.subscription_resync,
                tenant: args.tenant,
                backoff: crate::workqueue::Backoff {
                    base: args.kube_retry_base,
                    max: args.kube_retry_max,
                },
                refusal_grace: args.subscription_refusal_grace,
                blocked_notice_every: args.notify_blocked_every,
            },
            hub.replica_id().to_owned(),
            notifier.clone(),
            // The data dir's key, as the JWT key: replicas share one.
            crate::sealed::Sealer::load_or_create(&args.data_dir.join("secrets.key"))?,
        );
        cluster_tasks.extend(subscriptions.spawn(hub.clone()));
        cluster_tasks.extend(subscriptions.spawn_relay().await?);
        let history = history_settings(&args)?;
        let history_task = Recorder::new(
            auth.db.clone(),
            history.clone(),
            Some(subscriptions.clone()),
            metrics.clone(),
        )
        .spawn(&hub);
        if cluster.is_linked() {
            cluster_tasks.push(tokio::spawn(report_cluster_health(
                cluster.clone(),
                health.clone(),
            )));
        }
        let limits = &args.transport;
        let gate = Gate::new(limits.clone());
        let request_buffer = RequestBuffer::new(limits.max_request_buffer);
        let subscription_limits = subscription_limits(&args, &auth.db);
        let purge = {
            let (limiter, enrollment) = (auth.limiter.clone(), enrollment.clone());
            let subscription_limits = subscription_limits.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(LIMITER_PURGE_INTERVAL);
                loop {
                    every.tick().await;
                    let n = limiter.purge_idle()
                        + enrollment.purge_idle_limits()
                        + subscription_limits.purge_idle();
                    tracing::debug!(purged = n, "idle rate-limit buckets forgotten");
                }
            })
        };
        let router = Server::builder()
            .accept_http1(true)
            .http2_keepalive_interval(Some(args.keepalive_interval))
            .http2_keepalive_timeout(Some(args.keepalive_timeout))
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
            .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
            .timeout(limits.request_timeout)
            .tcp_nodelay(true)
            .layer(ConsoleLayer::new(console_addr))
            .layer(cors_layer(&args.cors_origins)?)
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(RequestBufferLayer(request_buffer))
            .layer(RpcTraceLayer::new(metrics.clone()))
            .layer(api::AccessLayer::new(auth.clone(), enrollment.clone()))
            .add_routes(api::routes(api::Parts {
                auth: auth.clone(),
                subscriptions: subscriptions.clone(),
                subscription_limits: subscription_limits.clone(),
                hub: hub.clone(),
                enrollment: enrollment.clone(),
                worker_limits: Arc::new(worker_limits(&args)),
                ca_hash: pki.ca_hash(),
                agent_url: agent_url(&args, local_addr),
                notifier: notifier.clone(),
                history,
            }))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        // On shutdown, end the long-lived streams (agents, watchers) so the
        // connections drain; give them DRAIN_TIMEOUT, then stop regardless.
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let closing_hub = hub.clone();
        // systemd (Type=notify): ready now that the port is bound and the
        // store migrated; watchdog pings while serving.
        minispod_support::sd_notify("READY=1");
        let watchdog = minispod_support::spawn_watchdog(|| true);
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
        let console_server = console_listener.map(|l| {
            let (router, mut stop) = (router.clone(), stop_rx.clone());
            let incoming = plain_incoming(l, gate.clone());
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = router.serve_with_incoming_shutdown(incoming, stopped).await {
                    tracing::warn!(error = %e, "console listener failed");
                }
            })
        });
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
        if let Some(t) = console_server {
            t.abort();
        }
        cleanup.abort();
        mail_worker.abort();
        fleet_notices.abort();
        purge.abort();
        database_watch.abort();
        if let Some(t) = metrics_server {
            t.abort();
        }
        if let Some(t) = watchdog {
            t.abort();
        }
        flusher.abort();
        history_task.abort();
        for t in cluster_tasks {
            t.abort();
        }
        if let Err(e) = hub.flush_metrics().await {
            tracing::warn!(error = %e, "final heartbeat metrics flush failed");
        }
        replica_tasks.stop(&hub, Duration::from_secs(2)).await;
        if let Err(e) = replica.leave().await {
            tracing::warn!(error = %e, "could not leave the replicas");
        }
        auth.db.close().await;
        tracing::info!("control plane stopped");
        served.context("serve")
    }
}

/// The names grpc.health.v1 reports: the server as a whole ("") and every
/// API service, all SERVING while the store answers and NOT_SERVING from the
/// moment shutdown begins.
const API_SERVICES: [&str; 9] = api::HEALTH_NAMES;

/// The grpc.health.v1 name of the cluster link: SERVING while it is
/// CONNECTED. Only that name: a lost API server must not take the control
/// plane out of a load balancer, since agents' streams do not need it.
pub const CLUSTER_HEALTH: &str = "minispod.cluster";

/// Reports the cluster link's state on grpc.health.v1 as [`CLUSTER_HEALTH`].
async fn report_cluster_health(link: ClusterLink, health: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus;
    let mut last = None;
    loop {
        let up = link.state() == pb::ClusterLinkState::Connected;
        if last != Some(up) {
            let status = if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status(CLUSTER_HEALTH, status).await;
            last = Some(up);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How often the database is checked for grpc.health.v1.
const DATABASE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Reports NOT_SERVING on grpc.health.v1 (overall and for every API
/// service) while the database does not answer, and SERVING again once it
/// does, so probes and load balancers route around a replica cut off from it.
async fn report_database_health(db: Db, health: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus;
    let mut serving = true;
    loop {
        tokio::time::sleep(DATABASE_CHECK_INTERVAL).await;
        let up = matches!(
            tokio::time::timeout(DATABASE_CHECK_INTERVAL, db.ping()).await,
            Ok(Ok(()))
        );
        if up == serving {
            continue;
        }
        serving = up;
        let status = if up {
            tracing::info!("database reachable again: SERVING");
            ServingStatus::Serving
        } else {
            tracing::warn!("database unreachable: NOT_SERVING");
            ServingStatus::NotServing
        };
        for name in API_SERVICES {
            health.set_service_status(name, status).await;
        }
    }
}

/// rustls server settings: the server certificate from the built-in CA,
/// client certificates from the same CA accepted but optional (browsers and
/// grpcurl have none; agents will), ALPN h2 and http/1.1 (grpc-web over
/// HTTP/1.1 needs the latter).
fn tls_config(pki: &Pki) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(pki.ca_cert_der().to_vec().into())
        .context("trust the CA")?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .context("client certificate verifier")?;
    let chain = rustls_pemfile::certs(&mut pki.server_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("server certificate")?;
    let key = rustls_pemfile::private_key(&mut pki.server_key_pem.as_bytes())
        .context("server key")?
        .context("no server key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("server identity")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Enrollment settings from the command line, reading the secret files.
fn enrollment_config(args: &ServeArgs) -> anyhow::Result<EnrollmentConfig> {
    let read = |path: &std::path::Path| -> anyhow::Result<String> {
        let s =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let s = s.trim().to_owned();
        anyhow::ensure!(!s.is_empty(), "{} is empty", path.display());
        Ok(s)
    };
    let static_token = match &args.enrollment_token_file {
        Some(p) => {
            let token = read(p)?;
            anyhow::ensure!(
                token.len() >= 16,
                "the enrollment token in {} is shorter than 16 characters",
                p.display()
            );
            Some(StaticToken {
                token: Secret::new(token),
                source: p.display().to_string(),
                ttl: args.enrollment_token_ttl,
                max_uses: args.enrollment_token_max_uses,
            })
        }
        None => None,
    };
    let k3s_token = match &args.k3s_token_file {
        Some(p) => Secret::new(read(p)?),
        None => Secret::default(),
    };
    Ok(EnrollmentConfig {
        cert_ttl: args.worker_cert_ttl.max(Duration::from_secs(60)),
        static_token,
        k3s_server_url: args.k3s_server_url.clone(),
        k3s_token,
        k3s_token_ttl: args.k3s_token_ttl,
        rate_burst: args.enroll_burst,
        rate_per_second: args.enroll_per_second,
    })
}

/// The per-worker limits of AgentService from the command line.
fn worker_limits(args: &ServeArgs) -> WorkerLimits {
    WorkerLimits::new(
        Rate {
            burst: args.worker_connect_burst,
            every: args.worker_connect_every,
        },
        Rate {
            burst: args.worker_renew_burst,
            every: args.worker_renew_every,
        },
        Rate {
            burst: args.worker_ready_change_burst,
            every: args.worker_ready_change_every,
        },
    )
}

/// Where agents reach this control plane: `--agent-url`, or a URL on the
/// TLS port whose host the server certificate covers.
fn agent_url(args: &ServeArgs, local: SocketAddr) -> String {
    if let Some(url) = &args.agent_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = if local.ip().is_loopback() {
        "localhost".to_owned()
    } else {
        args.tls_sans
            .first()
            .cloned()
            .or_else(crate::pki::hostname)
            .unwrap_or_else(|| "localhost".to_owned())
    };
    format!("https://{host}:{}", local.port())
}

/// CORS for grpc-web from the configured origins (none by default).
fn cors_layer(origins: &[String]) -> anyhow::Result<CorsLayer> {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .filter(|o| !o.is_empty())
            .map(|o| HeaderValue::from_str(o.trim_end_matches('/')))
            .collect::<Result<Vec<_>, _>>()
            .context("--cors-origin")?;
        AllowOrigin::list(list)
    };
    let header = HeaderName::from_static;
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header("content-type"),
            header("x-grpc-web"),
            header("x-user-agent"),
            header("grpc-timeout"),
            header("authorization"),
            header("connect-protocol-version"),
        ])
        .expose_headers([
            header("grpc-status"),
            header("grpc-message"),
            header("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(24 * 3600)))
}

/// The file a generated bootstrap password is written to (mode 0600).
pub const ADMIN_PASSWORD_FILE: &str = "admin.password";

/// Creates the bootstrap administrator when the store has no administrator
/// at all: `--admin-email` (default `admin@minispod.local`) with
/// `--admin-password`, or a generated password written to
/// `<data-dir>/admin.password` (0600) and printed only to a terminal (under
/// systemd stdout is the journal). Once any administrator exists, nothing is
/// created, so deleting or renaming this account does not bring it back.
async fn bootstrap_admin(auth: &AuthState, args: &ServeArgs) -> anyhow::Result<()> {
    if users_db::count_admins(auth.db.read()).await? > 0 {
        return Ok(());
    }
    let email = Email::parse(
        args.admin_email
            .as_deref()
            .unwrap_or("admin@minispod.local"),
    )
    .map_err(|why| anyhow::anyhow!("--admin-email {why}"))?;
    if users_db::by_email(&auth.db, email.as_str())
        .await?
        .is_some()
    {
        tracing::warn!(email = %email.as_str(), "no administrator exists, but the bootstrap email belongs to a user; not promoting it (give --admin-email another address)");
        return Ok(());
    }
    let given = args.admin_password.clone();
    let generated = given.is_none();
    let password = match given {
        Some(p) => {
            Password::parse(p.expose()).map_err(|why| anyhow::anyhow!("--admin-password {why}"))?
        }
        None => {
            let mut raw = [0u8; 18];
            rand::rng().fill_bytes(&mut raw);
            Password::parse(&URL_SAFE_NO_PAD.encode(raw)).expect("24 characters")
        }
    };
    let hash = auth.hasher.hash(password.expose()).await?;
    let mut tx = auth.db.begin().await?;
    let user = users_db::insert(
        &mut tx,
        email.as_str(),
        "Administrator",
        &hash,
        minispod_proto::v1::Role::Administrator,
    )
    .await?;
    // The operator chose the address; nobody could verify it by mail yet.
    let user = users_db::verify_email(&mut tx, &user.id, &user.email).await?;
    if generated {
        // Written before the commit: if it cannot be kept, nobody would
        // know the password, so the account is not created either.
        let path = args.data_dir.join(ADMIN_PASSWORD_FILE);
        minispod_support::write_private(&path, format!("{}\n", password.expose()).as_bytes())
            .with_context(|| format!("write {}", path.display()))?;
    }
    tx.commit().await?;
    tracing::info!(user_id = %user.id, email = %user.email, "created the bootstrap administrator");
    if generated {
        let path = args.data_dir.join(ADMIN_PASSWORD_FILE);
        tracing::info!(file = %path.display(), "the bootstrap administrator's generated password is in this file (mode 0600)");
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            println!(
                "\n  MiniSpod bootstrap administrator\n    email:    {}\n    password: {}\n  Also in {} (mode 0600); change it after logging in.\n",
                user.email,
                password.expose(),
                path.display()
            );
        }
    }
    Ok(())
}

/// Deletes refresh tokens a day after they expired, and rate-limit buckets
/// and known addresses that no longer limit anything, hourly.
async fn expire_refresh_tokens(db: Db) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        let outcome = async {
            let now = now_ms();
            let mut tx = db.begin().await?;
            let n = refresh_db::delete_expired(&mut tx, now - 86_400_000).await?
                + crate::auth::recovery::delete_expired(&mut tx, now - 86_400_000).await?;
            // Buckets idle for a day have long refilled.
            let limits = crate::rate_limit::queries::delete_stale_limits(
                &mut tx,
                now - 86_400_000,
                crate::rate_limit::known_address_cutoff(now),
            )
            .await?;
            tx.commit().await?;
            Ok::<_, crate::error::AppError>(n + limits)
        }
        .await;
        match outcome {
            Ok(n) if n > 0 => tracing::info!(
                deleted = n,
                "expired refresh and account tokens and idle rate limits removed"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "refresh token cleanup failed"),
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; draining");
}
