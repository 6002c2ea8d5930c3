//! The web console: the single-page app built from `web/` and embedded in
//! the binary (see `build.rs`), served at `/` on the API's own port so it
//! shares the API's origin and needs no CORS.
//!
//! [`ConsoleLayer`] sits in front of the gRPC router: a `GET` or `HEAD`
//! that is not gRPC gets a console file (or, under `/downloads/`, a backup
//! download); anything under `/restic/` goes to the directory backup
//! destinations' REST server (`backups/rest.rs`, agents only); other
//! requests go on to the API, bounded by `--request-timeout`. Hashed files under `/assets/` are cached for a year; every other
//! path is a route of the app and answers `index.html`, never cached, so a
//! deep link (`/workers/<id>`) loads the app and a new release is picked up
//! at the next navigation. Every console response carries a strict
//! Content-Security-Policy and its companions.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tonic::{body::Body, transport::server::TcpConnectInfo};
use tower::{Layer, Service};

use crate::{
    auth::cookie::RequestAuthority,
    backups::{Backups, rest::RestServer},
};

/// Where backup download links live (`backups/download.rs`).
const DOWNLOADS: &str = "/downloads/";

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its URL path, e.g. `/assets/app-3FQ2.js`.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
    /// The same bytes gzipped at build time, when worth it.
    pub gzip: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// Shown at every console path when the binary was built without `web/dist`.
const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>MiniSpod</title></head>\
<body><h1>MiniSpod</h1><p>This control plane was built without its web console. \
Build it with Node.js: <code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>, then rebuild the \
control plane. The API on this port works either way.</p></body></html>";

/// The console's Content-Security-Policy: nothing but our own files, no
/// inline script or style, API calls to our own origin only, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The response to a console request for `path`.
fn respond(method: &Method, path: &str, accepts_gzip: bool) -> Response<Body> {
    let (status, asset, cache) = if path.starts_with("/assets/") {
        match find(path) {
            Some(a) => (
                StatusCode::OK,
                Some(a),
                "public, max-age=31536000, immutable",
            ),
            None => (StatusCode::NOT_FOUND, None, "no-cache"),
        }
    } else if path
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'))
    {
        // A file we do not have (favicon.ico, robots.txt, a stale asset
        // name without the /assets/ prefix): not a route of the app.
        match find(path) {
            Some(a) if path != "/index.html" => (StatusCode::OK, Some(a), "no-cache"),
            _ => (StatusCode::NOT_FOUND, None, "no-cache"),
        }
    } else {
        (StatusCode::OK, find("/index.html"), "no-cache")
    };
    let mut builder = locked_down(status)
        .header(header::CACHE_CONTROL, cache)
        .header(header::VARY, "accept-encoding");
    let body: &'static [u8] = match (status, asset) {
        (StatusCode::OK, Some(a)) => {
            builder = builder.header(header::CONTENT_TYPE, a.content_type);
            match a.gzip {
                Some(gz) if accepts_gzip => {
                    builder = builder.header(header::CONTENT_ENCODING, "gzip");
                    gz
                }
                _ => a.body,
            }
        }
        (StatusCode::OK, None) => {
            builder = builder.header(header::CONTENT_TYPE, "text/html; charset=utf-8");
            NOT_BUILT.as_bytes()
        }
        _ => {
            builder = builder.header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
            b"not found\n"
        }
    };
    builder = builder.header(header::CONTENT_LENGTH, body.len());
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::new(Full::new(Bytes::from_static(body)))
    };
    builder.body(body).expect("static headers are valid")
}

/// What a request is for.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// gRPC or grpc-web (and CORS preflights for it): the API.
    Rpc,
    /// A page load or a file: the console.
    Console,
    /// Anything else (a form post, `text/plain`): refused, so that no page
    /// can reach an RPC without a CORS preflight.
    Refused,
}

fn kind<B>(req: &Request<B>) -> Kind {
    let grpc_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    match *req.method() {
        _ if grpc_type => Kind::Rpc,
        Method::GET | Method::HEAD => Kind::Console,
        Method::OPTIONS => Kind::Rpc,
        _ => Kind::Refused,
    }
}

/// The authority a request was sent to (HTTP/2 `:authority`, else `Host`).
fn authority<B>(req: &Request<B>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
}

/// Whether `authority` names this machine's loopback (`localhost`,
/// `127.0.0.1`, `[::1]`, any port), as a DNS-rebinding page's would not.
fn is_loopback_name(authority: &str) -> bool {
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost") || host == "127.0.0.1" || host == "[::1]"
}

/// A response builder with the headers every console answer carries.
pub(crate) fn locked_down(status: StatusCode) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::X_FRAME_OPTIONS, "DENY")
        .header("cross-origin-opener-policy", "same-origin")
        .header("cross-origin-resource-policy", "same-origin")
}

/// A plain-text answer with the console's headers.
fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    locked_down(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::new(Full::new(Bytes::from_static(text.as_bytes()))))
        .expect("static headers are valid")
}

fn accepts_gzip<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| {
            let mut parts = enc.trim().split(';');
            parts.next().is_some_and(|e| e.trim() == "gzip")
                && !parts.any(|p| p.trim().replace(' ', "") == "q=0")
        })
}

/// Serves the console in front of the API (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct ConsoleLayer {
    loopback_listener: Option<std::net::SocketAddr>,
    downloads: Option<Backups>,
    repositories: Option<RestServer>,
    request_timeout: Option<std::time::Duration>,
}

impl ConsoleLayer {
    /// The layer; `loopback_listener` is the plaintext `--console-listen`
    /// address, where only requests naming localhost are answered (a
    /// DNS-rebinding page reaching 127.0.0.1 under its own name is not).
    pub fn new(loopback_listener: Option<std::net::SocketAddr>) -> Self {
        ConsoleLayer {
            loopback_listener,
            downloads: None,
            repositories: None,
            request_timeout: None,
        }
    }

    /// Serves directory backup destinations to agents under
    /// `/restic/` (`backups/rest.rs`).
    pub fn with_repositories(mut self, server: RestServer) -> Self {
        self.repositories = Some(server);
        self
    }

    /// Bounds the time from an API call's headers to its response: past
    /// it the call ends CANCELLED (what tonic's `Server::timeout` does).
    /// It is applied here rather than to the whole server so that the
    /// backup repositories' uploads, bounded by their own stall timeout,
    /// are not cut off mid-way (tonic would answer them a gRPC status,
    /// which restic would read as a stored file).
    pub fn with_request_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Serves GETs of `/downloads/<token>` (CreateBackupDownload's links)
    /// from `backups`.
    pub fn with_downloads(mut self, backups: Backups) -> Self {
        self.downloads = Some(backups);
        self
    }
}

impl<S> Layer<S> for ConsoleLayer {
    type Service = Console<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Console {
            inner,
            loopback_listener: self.loopback_listener,
            downloads: self.downloads.clone(),
            repositories: self.repositories.clone(),
            request_timeout: self.request_timeout,
        }
    }
}

/// The service [`ConsoleLayer`] makes.
#[derive(Debug, Clone)]
pub struct Console<S> {
    inner: S,
    loopback_listener: Option<std::net::SocketAddr>,
    downloads: Option<Backups>,
    repositories: Option<RestServer>,
    request_timeout: Option<std::time::Duration>,
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, B, ResBody> Service<Request<B>> for Console<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let authority = authority(&req);
        let on_loopback_listener = self.loopback_listener.is_some()
            && req
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::local_addr)
                == self.loopback_listener;
        if on_loopback_listener && !authority.as_deref().is_some_and(is_loopback_name) {
            let response = plain(
                StatusCode::MISDIRECTED_REQUEST,
                "this listener answers only to localhost\n",
            );
            return Box::pin(std::future::ready(Ok(response)));
        }
        if req.uri().path().starts_with(crate::backups::rest::PREFIX)
            && let Some(server) = &self.repositories
        {
            let server = server.clone();
            return Box::pin(async move { Ok(server.serve(req).await) });
        }
        match kind(&req) {
            Kind::Rpc => {}
            Kind::Console if req.uri().path().starts_with(DOWNLOADS) => {
                let token = req.uri().path()[DOWNLOADS.len()..].to_owned();
                let response = match (&self.downloads, req.method()) {
                    (Some(b), &Method::GET) => {
                        let b = b.clone();
                        return Box::pin(async move { Ok(b.serve_download(&token).await) });
                    }
                    (Some(_), _) => plain(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "a download link is fetched with GET\n",
                    ),
                    (None, _) => plain(StatusCode::NOT_FOUND, "not found\n"),
                };
                return Box::pin(std::future::ready(Ok(response)));
            }
            Kind::Console => {
                let response = respond(req.method(), req.uri().path(), accepts_gzip(&req));
                return Box::pin(std::future::ready(Ok(response)));
            }
            Kind::Refused => {
                let response = plain(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "the API takes gRPC or grpc-web (application/grpc*)\n",
                );
                return Box::pin(std::future::ready(Ok(response)));
            }
        }
        // The authority this request was sent to, for the session cookie's
        // Origin check.
        if let Some(a) = authority {
            req.extensions_mut().insert(RequestAuthority(a));
        }
        // The clone is not known to be ready; swap so the ready one serves.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let timeout = self.request_timeout;
        Box::pin(async move {
            let call = inner.call(req);
            let response = match timeout {
                Some(t) => match tokio::time::timeout(t, call).await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Ok(tonic::Status::cancelled("Timeout expired")
                            .into_http::<Body>()
                            .map(Body::new));
                    }
                },
                None => call.await?,
            };
            Ok(response.map(Body::new))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[test]
    fn grpc_goes_to_the_api_page_loads_to_the_console_and_other_posts_nowhere() {
        let grpc_web = Request::post("/minispod.v1.AuthService/Login")
            .header("content-type", "application/grpc-web+proto")
            .body(())
            .unwrap();
        assert_eq!(kind(&grpc_web), Kind::Rpc);
        let grpc_get = Request::get("/x")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        assert_eq!(kind(&grpc_get), Kind::Rpc);
        assert_eq!(kind(&Request::options("/").body(()).unwrap()), Kind::Rpc);
        assert_eq!(kind(&get("/workers/abc")), Kind::Console);
        // A cross-site "simple" request (no preflight) cannot reach an RPC.
        let form = Request::post("/minispod.v1.AuthService/Login")
            .header("content-type", "text/plain")
            .body(())
            .unwrap();
        assert_eq!(kind(&form), Kind::Refused);
        assert_eq!(kind(&Request::post("/x").body(()).unwrap()), Kind::Refused);
    }

    #[test]
    fn only_loopback_names_pass_on_the_loopback_listener() {
        for ok in [
            "localhost:7080",
            "localhost",
            "127.0.0.1:7080",
            "[::1]:7080",
            "app.localhost:7080",
            "LOCALHOST:7080",
        ] {
            assert!(is_loopback_name(ok), "{ok}");
        }
        for bad in [
            "evil.example:7080",
            "127.0.0.1.evil.example:7080",
            "localhost.evil.example",
            "10.0.0.1:7080",
            "",
        ] {
            assert!(!is_loopback_name(bad), "{bad}");
        }
    }

    #[test]
    fn deep_links_load_the_app_and_unknown_files_are_not_found() {
        for path in ["/", "/workers/0190-abc", "/users"] {
            let r = respond(&Method::GET, path, false);
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
            assert!(
                r.headers()[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html")
            );
        }
        for path in ["/favicon.ico", "/assets/app-missing.js"] {
            assert_eq!(
                respond(&Method::GET, path, false).status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
    }

    #[test]
    fn every_console_response_is_locked_down() {
        for path in ["/", "/assets/nope.js"] {
            let r = respond(&Method::GET, path, true);
            let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap();
            assert!(csp.contains("frame-ancestors 'none'"));
            assert!(csp.contains("connect-src 'self'"));
            assert!(csp.contains("script-src 'self';"));
            assert!(!csp.contains("unsafe"));
            assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(r.headers()[header::REFERRER_POLICY], "no-referrer");
        }
    }

    #[test]
    fn gzip_is_chosen_only_when_accepted() {
        let with = |v: &str| {
            Request::get("/")
                .header("accept-encoding", v)
                .body(())
                .unwrap()
        };
        assert!(accepts_gzip(&with("gzip, deflate, br")));
        assert!(accepts_gzip(&with("br;q=1.0, gzip;q=0.8")));
        assert!(!accepts_gzip(&with("gzip;q=0")));
        assert!(!accepts_gzip(&with("br")));
        assert!(!accepts_gzip(&get("/")));
    }
}
