//! Logging: tracing to stderr as text or JSON, and one span per RPC.

use std::{
    fmt::Display,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};
use tracing::{Instrument, field};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::{config::LogFormat, metrics::Metrics};

/// Installs the global subscriber. `RUST_LOG` overrides the default level
/// (info). Calling it twice is harmless (tests do).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,hyper=warn,tower=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
    };
}

/// Wraps every request in an `rpc` span with the method, the peer and, once
/// the response headers are known, the gRPC status code, and logs one line
/// per call.
#[derive(Debug, Clone)]
pub struct RpcTraceLayer {
    metrics: Arc<Metrics>,
}

impl RpcTraceLayer {
    /// A layer counting calls into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        RpcTraceLayer { metrics }
    }
}

impl<S> Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTrace {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`RpcTraceLayer`].
#[derive(Debug, Clone)]
pub struct RpcTrace<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<http::Request<B>> for RpcTrace<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let peer = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.get_ref().remote_addr())
            .or_else(|| {
                req.extensions()
                    .get::<TcpConnectInfo>()
                    .and_then(|i| i.remote_addr())
            });
        let span = tracing::info_span!(
            "rpc",
            method = %req.uri().path(),
            peer = %peer.map(|p| p.to_string()).unwrap_or_default(),
            code = field::Empty,
        );
        let start = Instant::now();
        let method = req.uri().path().to_owned();
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(
            async move {
                let res = fut.await;
                let elapsed = start.elapsed();
                let elapsed_ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
                match &res {
                    Ok(resp) => {
                        // Errors come as trailers-only responses, so the
                        // status is in the headers; a normal response has it
                        // in the trailers, after a successful start.
                        let code = resp
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<i32>().ok())
                            .map(tonic::Code::from)
                            .unwrap_or(tonic::Code::Ok);
                        let name = crate::error::code_name(code);
                        metrics.observe_rpc(&method, name, elapsed);
                        tracing::Span::current().record("code", field::display(name));
                        tracing::info!(elapsed_ms, "rpc done");
                    }
                    Err(e) => tracing::warn!(elapsed_ms, error = %e, "rpc failed"),
                }
                res
            }
            .instrument(span),
        )
    }
}
