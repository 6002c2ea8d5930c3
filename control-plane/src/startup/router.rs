//! What the port serves: every gRPC service with its message limit
//! ([`api_routes`]), the HTTP/2 guards, the TLS settings and CORS for
//! grpc-web.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use http::{HeaderName, HeaderValue, Method};
use tonic::service::Routes;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{api, pki::Pki};

pub use crate::api::message_limits;

/// `health` (grpc.health.v1), reflection and every API service
/// ([`api::routes`], each with its largest request message), to be served
/// behind [`api::AccessLayer`].
pub(super) fn api_routes(
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    parts: api::Parts,
) -> anyhow::Result<Routes> {
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
    Ok(api::routes(parts)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha))
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
