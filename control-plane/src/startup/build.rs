//! The first half of start-up: everything that can fail.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tower_http::cors::CorsLayer;

use crate::{
    auth::{
        AccountMail, AuthState,
        password::PasswordHasher,
        tokens::{AccessTokens, load_or_create_secret},
    },
    catalog::seed,
    cluster::ClusterLink,
    config::ServeArgs,
    mail::Mail,
    metrics::Metrics,
    nodes::Nodes,
    notifications::Notifier,
    pki::Pki,
    rate_limit::{LoginLimiter, RateLimiter},
    store::Db,
    subscriptions::Subscriptions,
    transport::TransportLimits,
    workers::{
        enrollment::Enrollment,
        hub::FleetHub,
        replicas::{Replica, ReplicaTasks},
    },
};

use super::{
    bootstrap::bootstrap_admin,
    router::{api_routes, cors_layer, tls_config},
    settings,
    tasks::Loops,
};

/// How the connections are served (HTTP/2 settings and the limits).
pub(super) struct Connections {
    /// `--keepalive-interval`.
    pub keepalive_interval: Duration,
    /// `--keepalive-timeout`.
    pub keepalive_timeout: Duration,
    /// The connection, stream, buffer and proxy limits.
    pub limits: TransportLimits,
    /// CORS for grpc-web.
    pub cors: CorsLayer,
}

/// A built server, bound to its ports, not yet serving: running it
/// ([`Application::run_until`]) cannot fail but for the serve loop itself.
pub struct Application {
    pub(super) listener: TcpListener,
    pub(super) local_addr: SocketAddr,
    pub(super) tls: Option<Arc<rustls::ServerConfig>>,
    pub(super) console_listener: Option<TcpListener>,
    pub(super) metrics_addr: Option<SocketAddr>,
    pub(super) pki: Arc<Pki>,
    /// Every gRPC service, grpc.health.v1 and reflection included.
    pub(super) routes: tonic::service::Routes,
    /// Who may call which method ([`crate::api::access`]), applied once to
    /// every call.
    pub(super) access: crate::api::AccessLayer,
    pub(super) connections: Connections,
    pub(super) health: tonic_health::server::HealthReporter,
    pub(super) metrics: Arc<Metrics>,
    pub(super) db: Db,
    pub(super) hub: FleetHub,
    pub(super) replica: Replica,
    /// The lease and the fleet's relay, started by `build` (the last thing
    /// that can fail).
    pub(super) replica_tasks: ReplicaTasks,
    pub(super) loops: Loops,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Opens and migrates the store, loads or creates the CA and the keys,
    /// bootstraps the administrator, seeds the catalog, links the cluster,
    /// builds the services and binds the listening ports.
    pub async fn build(args: ServeArgs) -> anyhow::Result<Application> {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("create data dir {}", args.data_dir.display()))?;
        // The database holds password hashes and the directory the keys.
        std::fs::set_permissions(
            &args.data_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .with_context(|| format!("restrict data dir {}", args.data_dir.display()))?;
        let db = Db::connect(
            args.store.database_url.as_deref(),
            &args.data_dir,
            &settings::store_options(&args.store),
        )
        .await?;
        let pki = Arc::new(Pki::load_or_create(&args.data_dir, &args.tls_sans)?);
        let secret = load_or_create_secret(&args.data_dir.join("jwt.key"))?;
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hasher = PasswordHasher::new(
            args.login.max_concurrent_hashes.unwrap_or(cpus),
            args.login.max_queued_hashes,
        )?;
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listen on {}", args.listen))?;
        let local_addr = listener.local_addr()?;
        let mail = Mail::new(&settings::mail_settings(
            &args.mail,
            &args.cluster,
            args.plaintext,
            local_addr,
        )?)?;
        let auth = AuthState {
            db: db.clone(),
            tokens: Arc::new(AccessTokens::new(&secret, args.login.access_token_ttl)),
            refresh_ttl: args.login.refresh_token_ttl,
            session_max_age: args.login.session_max_age,
            hasher,
            limiter: Arc::new(LoginLimiter::for_store(
                &db,
                settings::login_limits(&args.login),
            )),
            trusted_proxies: args.transport.trusted_proxies.clone().into(),
            registration_open: !args.login.close_registration,
        };
        let account_mail = AccountMail {
            mail,
            // Three mails per address at once, then one every ten minutes.
            limiter: Arc::new(RateLimiter::for_store(
                &db,
                "mail_address",
                3,
                Duration::from_secs(600),
            )),
        };
        bootstrap_admin(&auth, &args.login, &args.data_dir).await?;
        let seeded = seed::seed_once(&auth.db).await?;
        if seeded > 0 {
            tracing::info!(entries = seeded, "seeded the service catalog");
        }
        let metrics = Arc::new(Metrics::default());
        let history = settings::history_settings(&args.history, args.fleet.metrics_flush_interval)?;
        let hub = FleetHub::new(
            auth.db.clone(),
            settings::fleet_config(&args.fleet)?,
            metrics.clone(),
        );
        // Join the replicas. Whatever no live replica holds (a crash left it
        // online; on SQLite, everything) is offline until its agent reconnects.
        let (replica, stale) = Replica::join(&hub, args.store.replica_lease).await?;
        if stale > 0 {
            tracing::info!(
                workers = stale,
                "marked workers without a live stream INACTIVE"
            );
        }
        let cluster = ClusterLink::connect(
            args.cluster.kubeconfig.as_deref(),
            args.cluster.kube_in_cluster,
            settings::link_settings(&args.cluster),
        )
        .await?;
        let nodes = Nodes::new(cluster.clone());
        hub.set_nodes(Arc::new(nodes.clone()));
        let notifier = Notifier::new(account_mail.mail.clone())
            .with_outage_timing(settings::outage_timing(&args.notify));
        let enrollment = Enrollment::new(
            hub.clone(),
            pki.clone(),
            settings::enrollment_config(&args.fleet)?,
            Arc::new(notifier.clone()),
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
        let metrics_addr = metrics_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
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
        let subscriptions = Subscriptions::new(
            auth.db.clone(),
            cluster.clone(),
            settings::subscription_settings(
                &args.subscriptions,
                &args.cluster,
                &args.domains,
                args.notify.notify_blocked_every,
            ),
            hub.replica_id().to_owned(),
            notifier.clone(),
            // The data dir's key, as the JWT key: replicas share one.
            crate::sealed::Sealer::load_or_create(&args.data_dir.join("secrets.key"))?,
        );
        let backups = crate::backups::Backups::new(
            auth.db.clone(),
            subscriptions.clone(),
            hub.clone(),
            subscriptions.sealer().clone(),
            settings::backup_settings(&args.backups),
        );
        let subscription_limits = settings::subscription_limits(&args.subscriptions, &auth.db);
        let connections = Connections {
            keepalive_interval: args.keepalive_interval,
            keepalive_timeout: args.keepalive_timeout,
            limits: args.transport.clone(),
            cors: cors_layer(&args.cors_origins)?,
        };
        let (health, health_service) = tonic_health::server::health_reporter();
        let access = crate::api::AccessLayer::new(auth.clone(), enrollment.clone());
        let routes = api_routes(
            health_service,
            crate::api::Parts {
                auth: auth.clone(),
                account_mail: account_mail.clone(),
                cluster: cluster.clone(),
                hub: hub.clone(),
                ca_hash: pki.ca_hash(),
                agent_url: settings::agent_url(
                    args.agent_url.as_deref(),
                    &args.tls_sans,
                    local_addr,
                ),
                enrollment: enrollment.clone(),
                worker_limits: Arc::new(settings::worker_limits(&args.fleet)),
                subscriptions: subscriptions.clone(),
                backups: backups.clone(),
                subscription_limits: subscription_limits.clone(),
                notifier: notifier.clone(),
                history: history.clone(),
            },
        )?;
        // Last, as they start tasks: the replicas' lease and relays (on
        // PostgreSQL each opens a LISTEN channel, which can fail).
        let replica_tasks = replica.spawn().await?;
        let subscription_relay = subscriptions.spawn_relay().await?;

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
            console_listener,
            metrics_addr,
            pki,
            routes,
            access,
            connections,
            health: health.clone(),
            metrics: metrics.clone(),
            db: auth.db.clone(),
            hub: hub.clone(),
            replica,
            replica_tasks,
            loops: Loops {
                auth,
                account_mail,
                nodes,
                hub,
                notifier,
                timing: settings::notice_timing(&args.notify),
                health,
                metrics,
                metrics_listener,
                cluster,
                subscriptions,
                backups,
                subscription_relay,
                history,
                enrollment,
                subscription_limits,
                digest: crate::notifications::digest::DigestSettings {
                    behind: args.notify.versions_behind_digest,
                    every: args.notify.versions_behind_digest_every,
                },
            },
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
        self.metrics_addr
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
}
