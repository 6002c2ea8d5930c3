//! The API at the edge: the gRPC services, one file each, over the domain
//! modules.
//!
//! Every call first passes [`access::AccessLayer`], which applies the
//! table in [`access`] (who may call which method) and puts the caller in
//! the request's extensions; a handler reads it with [`access::caller`]
//! and maps request → domain call → response, turning `AppError` into a
//! `Status` with `?`. [`routes`] builds every service with its message
//! limit; startup adds health and reflection and the layers.

pub mod access;
pub mod agent;
pub mod auth;
pub mod backups;
pub mod catalog;
pub mod history;
pub mod notifications;
pub mod subscriptions;
pub mod users;
pub mod watch;
pub mod workers;

pub use access::AccessLayer;

use std::sync::Arc;

use minispod_proto::v1::{
    agent_service_server::AgentServiceServer, auth_service_server::AuthServiceServer,
    backup_service_server::BackupServiceServer, catalog_service_server::CatalogServiceServer,
    history_service_server::HistoryServiceServer,
    notification_service_server::NotificationServiceServer,
    subscription_service_server::SubscriptionServiceServer, user_service_server::UserServiceServer,
    worker_service_server::WorkerServiceServer,
};
use tonic::service::{Routes, RoutesBuilder};

use crate::{
    auth::{AccountMail, Accounts, AuthState},
    backups::Backups,
    cluster::ClusterLink,
    history::HistorySettings,
    notifications::Notifier,
    subscriptions::Subscriptions,
    workers::{enrollment::Enrollment, hub::FleetHub, limits::WorkerLimits},
};

/// Largest request message of each service: what its biggest valid request
/// needs, with room to spare, so a client cannot make the server buffer
/// more (AuthService: an email and a password; UserService: a bulk update
/// of 1,000 ids; CatalogService: an entry with 100 environment variables of
/// 4 KiB; AgentService: a 16 KiB CSR and the machine's facts).
pub mod message_limits {
    /// AuthService.
    pub const AUTH: usize = 16 * 1024;
    /// UserService.
    pub const USER: usize = 128 * 1024;
    /// CatalogService.
    pub const CATALOG: usize = 512 * 1024;
    /// WorkerService.
    pub const WORKER: usize = 256 * 1024;
    /// AgentService.
    pub const AGENT: usize = 64 * 1024;
    /// SubscriptionService: a create with 64 variable values of 1000
    /// characters at most.
    pub const SUBSCRIPTION: usize = 128 * 1024;
    /// NotificationService: preferences with a 2 KiB webhook URL and a
    /// handful of events.
    pub const NOTIFICATION: usize = 16 * 1024;
    /// HistoryService: an id and two durations.
    pub const HISTORY: usize = 4 * 1024;
    /// BackupService: a destination with its credentials.
    pub const BACKUP: usize = 8 * 1024;
}

/// The names grpc.health.v1 reports: the server as a whole ("") and every
/// API service.
pub const HEALTH_NAMES: [&str; 10] = [
    "",
    <AuthServiceServer<auth::AuthApi> as tonic::server::NamedService>::NAME,
    <UserServiceServer<users::UserApi> as tonic::server::NamedService>::NAME,
    <CatalogServiceServer<catalog::CatalogApi> as tonic::server::NamedService>::NAME,
    <WorkerServiceServer<workers::WorkerApi> as tonic::server::NamedService>::NAME,
    <AgentServiceServer<agent::AgentApi> as tonic::server::NamedService>::NAME,
    <SubscriptionServiceServer<subscriptions::SubscriptionApi> as tonic::server::NamedService>::NAME,
    <NotificationServiceServer<notifications::NotificationApi> as tonic::server::NamedService>::NAME,
    <HistoryServiceServer<history::HistoryApi> as tonic::server::NamedService>::NAME,
    <BackupServiceServer<backups::BackupApi> as tonic::server::NamedService>::NAME,
];

/// What the services are built over.
pub struct Parts {
    /// Accounts, tokens, sessions.
    pub auth: AuthState,
    /// Account mail (verification, recovery) and its per-address limit:
    /// the AuthService's alone.
    pub account_mail: AccountMail,
    /// The cluster link (perhaps unlinked), for the workers' node figures.
    pub cluster: ClusterLink,
    /// The subscriptions' shared state.
    pub subscriptions: Subscriptions,
    /// Backups and restores.
    pub backups: Backups,
    /// Per-user limits of the SubscriptionService.
    pub subscription_limits: subscriptions::CallerLimits,
    /// The fleet.
    pub hub: FleetHub,
    /// Enrollment and the workers' CA.
    pub enrollment: Enrollment,
    /// Per-worker limits of the AgentService.
    pub worker_limits: Arc<WorkerLimits>,
    /// The CA pin handed out with enrollment tokens.
    pub ca_hash: String,
    /// Where agents connect, handed out with enrollment tokens.
    pub agent_url: String,
    /// The operator's notices.
    pub notifier: Notifier,
    /// How history is kept.
    pub history: HistorySettings,
}

/// Every MiniSpod service, each with its message limit. Serve them behind
/// [`AccessLayer`] (`AccessLayer::new(auth, enrollment)`), which decides
/// who may call them.
pub fn routes(p: Parts) -> Routes {
    let mut b = RoutesBuilder::default();
    b.add_service(
        AuthServiceServer::new(auth::AuthApi::new(
            Accounts {
                auth: p.auth.clone(),
                mail: p.account_mail,
            },
            p.subscriptions.clone(),
        ))
        .max_decoding_message_size(message_limits::AUTH),
    )
    .add_service(
        UserServiceServer::new(users::UserApi::new(p.auth.clone(), p.subscriptions.clone()))
            .max_decoding_message_size(message_limits::USER),
    )
    .add_service(
        CatalogServiceServer::new(catalog::CatalogApi::new(p.auth.clone()))
            .max_decoding_message_size(message_limits::CATALOG),
    )
    .add_service(
        WorkerServiceServer::new(
            workers::WorkerApi::new(
                p.auth.clone(),
                p.hub.clone(),
                p.ca_hash,
                p.agent_url,
                p.subscription_limits.caller_recheck,
            )
            .with_cluster(p.cluster),
        )
        .max_decoding_message_size(message_limits::WORKER),
    )
    .add_service(
        AgentServiceServer::new(
            agent::AgentApi::new(
                p.hub,
                p.enrollment,
                p.auth.trusted_proxies.clone(),
                p.worker_limits,
            )
            .with_backups(p.backups.clone()),
        )
        .max_decoding_message_size(message_limits::AGENT),
    )
    .add_service(
        SubscriptionServiceServer::new(
            subscriptions::SubscriptionApi::new(
                p.auth.clone(),
                p.subscriptions,
                p.subscription_limits,
            )
            .with_backups(p.backups.clone()),
        )
        .max_decoding_message_size(message_limits::SUBSCRIPTION),
    )
    .add_service(
        NotificationServiceServer::new(notifications::NotificationApi::new(
            p.auth.clone(),
            p.notifier,
        ))
        .max_decoding_message_size(message_limits::NOTIFICATION),
    )
    .add_service(
        HistoryServiceServer::new(history::HistoryApi::new(p.auth, p.history))
            .max_decoding_message_size(message_limits::HISTORY),
    )
    .add_service(
        BackupServiceServer::new(backups::BackupApi::new(p.backups))
            .max_decoding_message_size(message_limits::BACKUP),
    );
    b.routes()
}
