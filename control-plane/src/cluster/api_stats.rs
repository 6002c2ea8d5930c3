//! What the control plane's requests to the Kubernetes API met: requests
//! per resource kind and verb, error answers per kind and status code, and
//! the last error with its message and time. A layer of the link's client
//! records them, so every request counts (the watches', the reconcilers',
//! the drains'); the metrics and GetClusterLink show them.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use kube::client::{Body, DynBody};
use tower::{BoxError, Service};

/// Series kept at most per map: kinds come from our own code, but a bound
/// costs nothing.
const MAX_SERIES: usize = 256;
/// The largest error body read for its message (a Status is small).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The longest message kept.
const MAX_MESSAGE: usize = 1024;

pub use crate::metrics::{ApiSnapshot, LastError};

#[derive(Debug, Default)]
struct Counts {
    requests: BTreeMap<(String, &'static str), u64>,
    errors: BTreeMap<(String, u16), u64>,
    last: Option<LastError>,
}

/// The counts. Shared by the client's layer and the link.
#[derive(Debug, Default)]
pub struct ApiStats {
    counts: Mutex<Counts>,
}

fn bump<K: Ord>(map: &mut BTreeMap<K, u64>, key: K, other: K) {
    let key = if map.len() >= MAX_SERIES && !map.contains_key(&key) {
        other
    } else {
        key
    };
    *map.entry(key).or_default() += 1;
}

impl ApiStats {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn request(&self, kind: &str, verb: &'static str) {
        bump(
            &mut self.counts().requests,
            (kind.to_owned(), verb),
            ("other".to_owned(), verb),
        );
    }

    fn error(&self, kind: &str, code: u16, message: &str) {
        let mut c = self.counts();
        bump(
            &mut c.errors,
            (kind.to_owned(), code),
            ("other".to_owned(), code),
        );
        let mut message = message.to_owned();
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        c.last = Some(LastError {
            kind: kind.to_owned(),
            code,
            message,
            at_ms: crate::store::now_ms(),
        });
    }

    /// The counts now.
    pub fn snapshot(&self) -> ApiSnapshot {
        let c = self.counts();
        ApiSnapshot {
            requests: c.requests.clone(),
            errors: c.errors.clone(),
            last: c.last.clone(),
        }
    }
}

/// The resource kind and verb of a request to the API server, from its
/// URL: `/api/v1/namespaces/{ns}/pods/{name}/eviction` → ("pods/eviction",
/// "create"); `/apis/apps/v1/deployments?watch=true` → ("deployments",
/// "watch").
pub fn classify(method: &Method, uri: &Uri) -> (String, &'static str) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[],
    };
    // namespaces/{ns}/{kind}[/{name}[/{sub}]] or {kind}[/{name}[/{sub}]]
    let (kind, named, sub) = match rest {
        ["namespaces", _ns, kind, more @ ..] => (*kind, more.first(), more.get(1)),
        [kind, more @ ..] => (*kind, more.first(), more.get(1)),
        [] => ("discovery", None, None),
    };
    let kind = match sub {
        Some(s) => format!("{kind}/{s}"),
        None => kind.to_owned(),
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if named.is_some() => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    };
    (kind, verb)
}

/// The client's layer: counts each request and reads each error answer's
/// message (and hands the same bytes on, so kube parses them as before).
#[derive(Clone)]
pub struct Recorded<S> {
    inner: S,
    stats: Arc<ApiStats>,
}

impl<S> Recorded<S> {
    /// Records what `inner` meets into `stats`.
    pub fn new(inner: S, stats: Arc<ApiStats>) -> Self {
        Recorded { inner, stats }
    }
}

type Answer = Response<Box<DynBody>>;

impl<S> Service<Request<Body>> for Recorded<S>
where
    S: Service<Request<Body>, Response = Answer, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Answer;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Answer, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (kind, verb) = classify(req.method(), req.uri());
        let stats = self.stats.clone();
        stats.request(&kind, verb);
        let answer = self.inner.call(req);
        Box::pin(async move {
            match answer.await {
                Ok(res) if res.status().as_u16() >= 400 => Ok(read_error(res, &kind, &stats).await),
                Ok(res) => Ok(res),
                Err(e) => {
                    stats.error(&kind, 0, &e.to_string());
                    Err(e)
                }
            }
        })
    }
}

fn never_fails(never: std::convert::Infallible) -> BoxError {
    match never {}
}

/// Records an error answer with its message, and gives it back whole.
async fn read_error(res: Answer, kind: &str, stats: &ApiStats) -> Answer {
    let code = res.status().as_u16();
    let (parts, mut body) = res.into_parts();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_ERROR_BODY {
                // Not a Status: kube will say it cannot parse it.
                buf.clear();
                break;
            }
            buf.extend_from_slice(&data);
        }
    }
    let bytes = bytes::Bytes::from(buf);
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            parts
                .status
                .canonical_reason()
                .unwrap_or_default()
                .to_owned()
        });
    stats.error(kind, code, &message);
    let body: Box<DynBody> = Box::new(Full::new(bytes).map_err(never_fails as fn(_) -> _));
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(method: Method, uri: &str) -> (String, &'static str) {
        classify(&method, &uri.parse().unwrap())
    }

    #[test]
    fn kinds_and_verbs_come_from_the_url() {
        assert_eq!(
            c(
                Method::PATCH,
                "/apis/apps/v1/namespaces/u-1/deployments/web?fieldManager=x&force=true"
            ),
            ("deployments".into(), "patch")
        );
        assert_eq!(
            c(Method::POST, "/api/v1/namespaces/u-1/pods/web-0/eviction"),
            ("pods/eviction".into(), "create")
        );
        assert_eq!(
            c(Method::PATCH, "/api/v1/namespaces/u-1"),
            ("namespaces".into(), "patch")
        );
        assert_eq!(
            c(
                Method::GET,
                "/api/v1/pods?labelSelector=a%3Db&watch=true&timeoutSeconds=290"
            ),
            ("pods".into(), "watch")
        );
        assert_eq!(c(Method::GET, "/api/v1/nodes"), ("nodes".into(), "list"));
        assert_eq!(c(Method::GET, "/api/v1/nodes/n1"), ("nodes".into(), "get"));
        assert_eq!(c(Method::GET, "/version"), ("discovery".into(), "list"));
    }

    #[test]
    fn errors_are_counted_per_kind_and_code_with_the_last_one_kept() {
        let s = ApiStats::default();
        s.request("deployments", "patch");
        s.error("deployments", 403, "deployments.apps is forbidden");
        s.error("deployments", 403, "deployments.apps is forbidden");
        s.error("namespaces", 401, &"x".repeat(5000));
        let snap = s.snapshot();
        assert_eq!(snap.errors[&("deployments".into(), 403)], 2);
        assert_eq!(snap.errors[&("namespaces".into(), 401)], 1);
        let last = snap.last.unwrap();
        assert_eq!((last.kind.as_str(), last.code), ("namespaces", 401));
        assert!(last.message.len() <= MAX_MESSAGE + '…'.len_utf8());
        for i in 0..(MAX_SERIES + 10) {
            s.error(&format!("k{i}"), 500, "boom");
        }
        assert!(s.snapshot().errors.len() <= MAX_SERIES + 1);
    }
}
