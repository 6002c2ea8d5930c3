//! What the port serves: every gRPC service with its message limit
//! ([`api_routes`]), the HTTP/2 guards, the TLS settings and CORS for
//! grpc-web.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use http::{HeaderName, HeaderValue, Method};
use minispod_proto::v1::{
    agent_service_server::AgentServiceServer, auth_service_server::AuthServiceServer,
    catalog_service_server::CatalogServiceServer, history_service_server::HistoryServiceServer,
    notification_service_server::NotificationServiceServer,
    subscription_service_server::SubscriptionServiceServer, user_service_server::UserServiceServer,
    worker_service_server::WorkerServiceServer,
};
use tonic::service::Routes;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{
    auth::{AccountMail, AuthState, service::AuthApi},
    catalog::service::CatalogApi,
    cluster::ClusterLink,
    history::{HistorySettings, service::HistoryApi},
    notifications::{Notifier, service::NotificationApi},
    pki::Pki,
    subscriptions::{
        Subscriptions,
        service::{CallerLimits, SubscriptionApi},
    },
    users::service::UserApi,
    workers::{
        agent_service::AgentApi, enrollment::Enrollment, hub::FleetHub, limits::WorkerLimits,
        service::WorkerApi,
    },
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
}

/// What the API services are built from.
pub(super) struct ApiParts {
    /// Sign-in and the store.
    pub auth: AuthState,
    /// Account mail (verification, recovery) and its per-address limit.
    pub account_mail: AccountMail,
    /// The cluster link (perhaps unlinked), for the workers' node figures.
    pub cluster: ClusterLink,
    /// The agents' streams.
    pub hub: FleetHub,
    /// The CA pin shown in join commands.
    pub ca_hash: String,
    /// Where agents reach this control plane.
    pub agent_url: String,
    /// Enrollment of new workers.
    pub enrollment: Enrollment,
    /// The per-worker limits of AgentService.
    pub worker_limits: Arc<WorkerLimits>,
    /// The subscriptions.
    pub subscriptions: Subscriptions,
    /// Per-user limits of SubscriptionService.
    pub subscription_limits: CallerLimits,
    /// Notices to users.
    pub notifier: Notifier,
    /// How history is kept.
    pub history: HistorySettings,
}

/// `routes` (grpc.health.v1) with reflection and every API service added,
/// each with its largest request message.
pub(super) fn api_routes(routes: Routes, parts: ApiParts) -> anyhow::Result<Routes> {
    let ApiParts {
        auth,
        account_mail,
        cluster,
        hub,
        ca_hash,
        agent_url,
        enrollment,
        worker_limits,
        subscriptions,
        subscription_limits,
        notifier,
        history,
    } = parts;
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
    Ok(routes
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            AuthServiceServer::new(AuthApi::new(
                auth.clone(),
                subscriptions.clone(),
                account_mail,
            ))
            .max_decoding_message_size(message_limits::AUTH),
        )
        .add_service(
            UserServiceServer::new(UserApi::new(auth.clone(), subscriptions.clone()))
                .max_decoding_message_size(message_limits::USER),
        )
        .add_service(
            CatalogServiceServer::new(CatalogApi::new(auth.clone()))
                .max_decoding_message_size(message_limits::CATALOG),
        )
        .add_service(
            WorkerServiceServer::new(
                WorkerApi::new(auth.clone(), hub.clone(), ca_hash, agent_url).with_cluster(cluster),
            )
            .max_decoding_message_size(message_limits::WORKER),
        )
        .add_service(
            AgentServiceServer::new(AgentApi::new(
                hub,
                enrollment,
                auth.trusted_proxies.clone(),
                worker_limits,
            ))
            .max_decoding_message_size(message_limits::AGENT),
        )
        .add_service(
            SubscriptionServiceServer::new(SubscriptionApi::new(
                auth.clone(),
                subscriptions,
                subscription_limits,
            ))
            .max_decoding_message_size(message_limits::SUBSCRIPTION),
        )
        .add_service(
            NotificationServiceServer::new(NotificationApi::new(auth.clone(), notifier))
                .max_decoding_message_size(message_limits::NOTIFICATION),
        )
        .add_service(
            HistoryServiceServer::new(HistoryApi::new(auth, history))
                .max_decoding_message_size(message_limits::HISTORY),
        ))
}

/// Local errors (refused or malformed streams) a connection may cause
/// before it is closed with GOAWAY: the HTTP/2 reset-flood guard.
pub(super) const MAX_LOCAL_ERROR_RESETS: usize = 256;
/// Largest header block a call may send.
pub(super) const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// rustls server settings: the server certificate from the built-in CA,
/// client certificates from the same CA accepted but optional (browsers and
/// grpcurl have none; agents will), ALPN h2 and http/1.1 (grpc-web over
/// HTTP/1.1 needs the latter).
pub(super) fn tls_config(pki: &Pki) -> anyhow::Result<rustls::ServerConfig> {
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

/// CORS for grpc-web from the configured origins (none by default).
pub(super) fn cors_layer(origins: &[String]) -> anyhow::Result<CorsLayer> {
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
