//! The HTTP side: authentication, body limits, routing of kube-apiserver's
//! URL layout to the API, discovery, and the request log.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::api::{Api, scope_of};
use crate::controllers::Behaviour;
use crate::dump;
use crate::error::ApiError;
use crate::kinds::{self, KINDS, Kind};
use crate::logs::{LogAnswer, LogOptions, PodLogs};
use crate::rbac::{self, Attributes, UserInfo};
use crate::record::{Recorded, Verb};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::watch::{Watch, WatchRequest};

/// A response body: whole JSON or a watch stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// Limits and timings of a stand-in.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Changes kept for watches to resume from (default 1000).
    pub history_limit: usize,
    /// Requests kept in the log (default 10 000).
    pub request_log_limit: usize,
    /// Largest request body (default 3 MiB, as kube-apiserver).
    pub body_limit: usize,
    /// How often watches that allow bookmarks get one (default 3 s).
    pub bookmark_interval: Duration,
    /// Where to dump mutating request bodies (default: the directory
    /// `MINISPOD_KUBE_REQUEST_DIR` names, if set).
    pub dump_dir: Option<PathBuf>,
    /// How long after its binding a pod's containers run and are Ready
    /// (default 300 ms); until then they are ContainerCreating. Unpullable
    /// images fail this long after the binding (ErrImagePull), and back
    /// off (ImagePullBackOff) as long again, at least 500 ms, later.
    pub pod_ready_delay: Duration,
    /// Lines of log kept per container (default 10 000).
    pub log_lines_per_container: usize,
    /// The nodes' disks for local-path volumes: a claim provisioned on node
    /// N gets the directory `<storage_root>/N/pvc-<uid>_<namespace>_<name>`
    /// (created, and removed when its volume is deleted), as K3s's
    /// local-path provisioner makes one under `/var/lib/rancher/k3s/storage`
    /// on each node. None (the default): volumes name that K3s path and no
    /// directory is made.
    pub storage_root: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            history_limit: 1000,
            request_log_limit: 10_000,
            body_limit: 3 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(3),
            dump_dir: dump::request_dir(),
            pod_ready_delay: Duration::from_millis(300),
            log_lines_per_container: 10_000,
            storage_root: None,
        }
    }
}

/// What every connection of a stand-in shares.
pub struct Shared {
    /// The API state; one lock per request.
    pub api: Mutex<Api>,
    /// The administrator's bearer token (a `system:masters` user).
    pub token: String,
    /// Every token the stand-in knows and the user it authenticates,
    /// the administrator's included.
    pub users: Vec<(String, UserInfo)>,
    /// Requests of users outside `system:masters` answered 403, oldest
    /// first (at most `FORBIDDEN_KEPT`).
    pub forbidden: Mutex<VecDeque<Recorded>>,
    /// Requests served, oldest first.
    pub log: Mutex<VecDeque<Recorded>>,
    /// Limits and timings.
    pub settings: Settings,
    /// The address served, for discovery.
    pub addr: SocketAddr,
    /// How the simulated nodes behave (readiness delay, unpullable images).
    pub behaviour: Behaviour,
    /// Container logs.
    pub logs: PodLogs,
}

/// How many refused requests `Shared::forbidden` keeps.
pub const FORBIDDEN_KEPT: usize = 1000;

impl Shared {
    /// The user of this name, if a token authenticates it.
    pub fn user_of_name(&self, name: &str) -> Option<&UserInfo> {
        self.users
            .iter()
            .find(|(_, u)| u.name == name)
            .map(|(_, u)| u)
    }

    /// The user a bearer token authenticates, if any.
    pub fn user_of(&self, token: &str) -> Option<&UserInfo> {
        self.users.iter().find(|(t, _)| t == token).map(|(_, u)| u)
    }
}

/// What a routed request answered.
enum Answer {
    Json(u16, Value),
    Text(&'static str),
    Watch(Watch),
    Log(LogAnswer),
}

/// The request, parsed once.
struct Call {
    user: UserInfo,
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    content_type: Option<String>,
    manager: String,
    body: Option<Value>,
    raw_body: Bytes,
}

impl Call {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("true" | "1"))
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        match (&self.body, self.raw_body.is_empty()) {
            (Some(body), _) => Ok(body.clone()),
            (None, true) => Err(ApiError::bad_request("the request needs a body")),
            (None, false) => Err(ApiError::bad_request(
                "the body of the request is not valid JSON",
            )),
        }
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("JSON values serialize");
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("a valid response")
}

/// Serve one request.
pub async fn serve(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, incoming) = request.into_parts();
    let path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or_default().to_string();
    let header_text = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header_text(header::CONTENT_TYPE);
    let query = parse_query(&raw_query);
    let field_manager = query
        .iter()
        .find(|(k, _)| k == "fieldManager")
        .map(|(_, v)| v.clone());
    let force = query.iter().any(|(k, v)| k == "force" && v == "true");
    let mut record = Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        query: raw_query,
        verb: Verb::Other,
        content_type: content_type.clone(),
        field_manager: field_manager.clone(),
        force,
        body: None,
        status: 0,
        user: String::new(),
    };

    let user = header_text(header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string))
        .and_then(|token| shared.user_of(&token).cloned());
    let answer = if let Some(user) = user {
        record.user = user.name.clone();
        match Limited::new(incoming, shared.settings.body_limit)
            .collect()
            .await
        {
            Err(_) => Err(ApiError::too_large(shared.settings.body_limit)),
            Ok(collected) => {
                let raw_body = collected.to_bytes();
                let body = serde_json::from_slice::<Value>(&raw_body).ok();
                record.body = body.clone();
                // kube-apiserver names managers of non-apply writes after the
                // user agent when no fieldManager is given.
                let manager = field_manager.clone().unwrap_or_else(|| {
                    header_text(header::USER_AGENT)
                        .unwrap_or_default()
                        .split('/')
                        .next()
                        .unwrap_or_default()
                        .to_string()
                });
                let call = Call {
                    user,
                    method: parts.method.clone(),
                    path: path.clone(),
                    query,
                    content_type,
                    manager,
                    body,
                    raw_body,
                };
                route(&shared, &call, &mut record.verb)
            }
        }
    } else {
        Err(ApiError::unauthorized())
    };
    let response = match answer {
        Ok(Answer::Json(code, value)) => json_response(code, &value),
        Ok(Answer::Text(text)) => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(text.as_bytes())).boxed())
            .expect("a valid response"),
        Ok(Answer::Log(LogAnswer::Text(text))) => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from(text)).boxed())
            .expect("a valid response"),
        Ok(Answer::Log(LogAnswer::Follow(stream))) => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain")
            .body(StreamBody::new(stream).boxed())
            .expect("a valid response"),
        Ok(Answer::Watch(watch)) => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(StreamBody::new(watch.into_stream()).boxed())
            .expect("a valid response"),
        Err(error) => json_response(error.code, &error.to_status()),
    };
    record.status = response.status().as_u16();
    tracing::debug!(method = %record.method, path = %record.path, status = record.status, "served");
    if record.status == 403
        && shared
            .user_of_name(&record.user)
            .is_some_and(|u| !u.is_superuser())
    {
        let mut forbidden = shared
            .forbidden
            .lock()
            .expect("the forbidden log lock is never poisoned");
        if forbidden.len() >= FORBIDDEN_KEPT {
            forbidden.pop_front();
        }
        forbidden.push_back(record.clone());
    }
    let mut log = shared.log.lock().expect("the log lock is never poisoned");
    if log.len() >= shared.settings.request_log_limit {
        log.pop_front();
    }
    log.push_back(record);
    Ok(response)
}

/// Where in the URL layout a request points.
struct Target {
    kind: &'static Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_target(group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let owned = |s: Option<&&str>| s.map(|s| s.to_string());
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !matches!(*plural, "status" | "finalize") || !tail.is_empty() =>
        {
            (Some(ns.to_string()), [&[*plural][..], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let plural = rest.first().ok_or_else(ApiError::no_route)?;
    let kind = kinds::lookup(group, version, plural).ok_or_else(ApiError::no_route)?;
    if rest.len() > 3 || (namespace.is_some() && !kind.namespaced) {
        return Err(ApiError::no_route());
    }
    Ok(Target {
        kind,
        namespace,
        name: owned(rest.get(1)),
        subresource: owned(rest.get(2)),
    })
}

/// Whether a path is an API resource's (`/api/v1/<...>`,
/// `/apis/<group>/<version>/<...>`) rather than discovery or health.
fn is_resource_path(segments: &[&str]) -> bool {
    matches!(segments, ["api", _, _, ..] | ["apis", _, _, _, ..])
}

fn route(shared: &Arc<Shared>, call: &Call, verb: &mut Verb) -> Result<Answer, ApiError> {
    let segments: Vec<&str> = call.path.split('/').filter(|s| !s.is_empty()).collect();
    if !is_resource_path(&segments) {
        // Discovery, /version and health are non-resource URLs.
        let api = shared.api.lock().expect("the API lock is never poisoned");
        let attributes =
            Attributes::non_resource(&call.method.as_str().to_ascii_lowercase(), &call.path);
        rbac::authorize(&api, &call.user, &attributes)?;
    }
    match segments.as_slice() {
        ["version"] => Ok(Answer::Json(200, version())),
        ["livez" | "readyz" | "healthz", ..] => Ok(Answer::Text("ok")),
        ["api"] => Ok(Answer::Json(
            200,
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}]}),
        )),
        ["apis"] => Ok(Answer::Json(200, group_list())),
        ["api", "v1"] => Ok(Answer::Json(200, resource_list("", "v1"))),
        ["apis", group, version]
            if KINDS
                .iter()
                .any(|k| k.group == *group && k.version == *version) =>
        {
            Ok(Answer::Json(200, resource_list(group, version)))
        }
        ["api", "v1", rest @ ..] => resource(shared, call, parse_target("", "v1", rest)?, verb),
        ["apis", group, version, rest @ ..] => {
            resource(shared, call, parse_target(group, version, rest)?, verb)
        }
        _ => Err(ApiError::no_route()),
    }
}

fn media_type(call: &Call) -> &str {
    call.content_type
        .as_deref()
        .and_then(|c| c.split(';').next())
        .map(str::trim)
        .unwrap_or("application/json")
}

fn require_json(call: &Call) -> Result<Value, ApiError> {
    let media = media_type(call);
    if media != "application/json" {
        return Err(ApiError::unsupported_media_type(media));
    }
    call.json_body()
}

fn resource(
    shared: &Arc<Shared>,
    call: &Call,
    target: Target,
    verb: &mut Verb,
) -> Result<Answer, ApiError> {
    let mut api = shared.api.lock().expect("the API lock is never poisoned");
    let attributes = Attributes::of_request(
        &call.method,
        target.kind,
        target.namespace.as_deref().unwrap_or_default(),
        target.name.as_deref(),
        target.subresource.as_deref(),
        call.flag("watch"),
        call.param("fieldSelector"),
    );
    rbac::authorize(&api, &call.user, &attributes)?;
    if call.param("dryRun").is_some() {
        return Err(ApiError::bad_request(
            "the stand-in does not support dryRun",
        ));
    }
    let kind = target.kind;
    let namespace = target.namespace.clone().unwrap_or_default();
    let name = target.name.as_deref();
    let subresource = target.subresource.as_deref();
    if kind.namespaced && namespace.is_empty() && (name.is_some() || call.method != Method::GET) {
        return Err(ApiError::no_route());
    }
    let dump = |verb: &str, body: &Value, object_name: &str| {
        if let Some(dir) = &shared.settings.dump_dir {
            let ns = kind.namespaced.then_some(namespace.as_str());
            let object = dump::complete(body, &kind.api_version(), kind.kind, ns, object_name);
            dump::write(dir, verb, kind, object_name, &object);
        }
    };
    match (&call.method, name, subresource) {
        (&Method::GET, None, None) => {
            let labels = LabelSelector::parse(call.param("labelSelector").unwrap_or_default())?;
            let fields = FieldSelector::parse(call.param("fieldSelector").unwrap_or_default())?;
            let namespace = target.namespace.clone();
            if call.flag("watch") {
                *verb = Verb::Watch;
                let timeout = call
                    .param("timeoutSeconds")
                    .and_then(|t| t.parse::<u64>().ok())
                    .unwrap_or(1800);
                let request = WatchRequest {
                    kind,
                    namespace,
                    labels,
                    fields,
                    resource_version: call.param("resourceVersion").map(str::to_string),
                    send_initial_events: call.flag("sendInitialEvents"),
                    allow_bookmarks: call.flag("allowWatchBookmarks"),
                    timeout: Duration::from_secs(timeout),
                };
                let watch = Watch::open(&api, request, shared.settings.bookmark_interval)?;
                Ok(Answer::Watch(watch))
            } else {
                *verb = Verb::List;
                Ok(Answer::Json(
                    200,
                    api.list(kind, namespace.as_deref(), &labels, &fields),
                ))
            }
        }
        (&Method::GET, Some(name), None) => {
            *verb = Verb::Get;
            Ok(Answer::Json(200, api.get(kind, &namespace, name)?))
        }
        (&Method::GET, Some(name), Some("log")) if kind == kinds::pods() => {
            *verb = Verb::Get;
            let options = LogOptions::parse(|p| call.param(p).map(str::to_string))?;
            let pod = api.get(kind, &namespace, name)?;
            drop(api);
            Ok(Answer::Log(crate::logs::serve_log(shared, &pod, options)?))
        }
        (&Method::GET, Some(name), Some("status")) if kind.status_subresource => {
            *verb = Verb::Get;
            Ok(Answer::Json(200, api.get(kind, &namespace, name)?))
        }
        (&Method::POST, None, None) => {
            *verb = Verb::Create;
            let body = require_json(call)?;
            let body_name = body
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            rbac::check_escalation(&api, &call.user, kind, &namespace, body_name, &body)?;
            let created = api.create(kind, &namespace, body.clone(), &call.manager)?;
            let created_name = created["metadata"]["name"].as_str().unwrap_or_default();
            dump("create", &body, created_name);
            Ok(Answer::Json(201, created))
        }
        (&Method::POST, Some(name), Some("eviction")) if kind == kinds::pods() => {
            *verb = Verb::Evict;
            let body = require_json(call)?;
            if let Some(k) = body.get("kind").and_then(Value::as_str)
                && k != "Eviction"
            {
                return Err(ApiError::bad_request(format!(
                    "expected an Eviction, got a {k}"
                )));
            }
            check_eviction_name(&body, name)?;
            let status = api.evict(&namespace, name, body.get("deleteOptions"))?;
            if let Some(dir) = &shared.settings.dump_dir {
                let object = dump::complete(&body, "policy/v1", "Eviction", Some(&namespace), name);
                dump::write(dir, "evict", kind, name, &object);
            }
            Ok(Answer::Json(201, status))
        }
        (&Method::PUT, Some(name), sub @ (None | Some("status"))) => {
            let scope = status_scope(kind, sub)?;
            *verb = Verb::Update;
            let body = require_json(call)?;
            rbac::check_escalation(&api, &call.user, kind, &namespace, name, &body)?;
            let updated = api.update(kind, &namespace, name, body.clone(), &call.manager, scope)?;
            dump(
                if sub.is_some() {
                    "update-status"
                } else {
                    "update"
                },
                &body,
                name,
            );
            Ok(Answer::Json(200, updated))
        }
        (&Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            let scope = status_scope(kind, sub)?;
            *verb = Verb::Patch;
            match media_type(call) {
                "application/merge-patch+json" => {
                    let patch = call.json_body()?;
                    if kind.group == rbac::RBAC_GROUP {
                        // Merge patches replace lists whole: the new rules
                        // are the patch's; roleRef cannot change.
                        let mut object = api.get(kind, &namespace, name)?;
                        if let Some(rules) = patch.get("rules") {
                            object["rules"] = rules.clone();
                        }
                        rbac::check_escalation(&api, &call.user, kind, &namespace, name, &object)?;
                    }
                    let patched =
                        api.merge_patch(kind, &namespace, name, &patch, &call.manager, scope)?;
                    dump(
                        if sub.is_some() {
                            "patch-status"
                        } else {
                            "patch"
                        },
                        &patch,
                        name,
                    );
                    Ok(Answer::Json(200, patched))
                }
                "application/apply-patch+yaml" => {
                    let Some(manager) = call.param("fieldManager").filter(|m| !m.is_empty()) else {
                        return Err(ApiError::bad_request(
                            "PATCH, application/apply-patch+yaml requests must supply a fieldManager (the fieldManager query parameter)",
                        ));
                    };
                    let body = match &call.body {
                        Some(body) => body.clone(),
                        None => {
                            return Err(ApiError::unsupported_media_type(
                                "application/apply-patch+yaml that is not JSON (the stand-in reads apply bodies as JSON, as kube-rs sends them)",
                            ));
                        }
                    };
                    if api.get(kind, &namespace, name).is_err() {
                        rbac::authorize_create_on_write(&api, &call.user, kind, &namespace, name)?;
                    }
                    rbac::check_escalation(&api, &call.user, kind, &namespace, name, &body)?;
                    let (object, created) = api.apply(
                        kind,
                        &namespace,
                        name,
                        &body,
                        manager,
                        call.flag("force"),
                        scope,
                    )?;
                    dump(
                        if sub.is_some() {
                            "apply-status"
                        } else {
                            "apply"
                        },
                        &body,
                        name,
                    );
                    Ok(Answer::Json(if created { 201 } else { 200 }, object))
                }
                other => Err(ApiError::unsupported_media_type(other)),
            }
        }
        (&Method::DELETE, Some(name), None) => {
            *verb = Verb::Delete;
            let mut options = call.body.clone();
            // DeleteOptions may come as query parameters too.
            if let Some(grace) = call
                .param("gracePeriodSeconds")
                .and_then(|g| g.parse::<i64>().ok())
            {
                let options = options.get_or_insert_with(|| json!({}));
                if options.is_object() && options.get("gracePeriodSeconds").is_none() {
                    options["gracePeriodSeconds"] = json!(grace);
                }
            }
            Ok(Answer::Json(
                200,
                api.delete(kind, &namespace, name, options.as_ref())?,
            ))
        }
        (_, Some(_), Some("eviction")) if kind == kinds::pods() => {
            Err(ApiError::method_not_allowed())
        }
        (_, Some(_), Some("status")) if kind.status_subresource => {
            Err(ApiError::method_not_allowed())
        }
        (_, _, Some(_)) => Err(ApiError::no_route()),
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn status_scope(kind: &Kind, subresource: Option<&str>) -> Result<crate::fields::Scope, ApiError> {
    match subresource {
        Some("status") if !kind.status_subresource => Err(ApiError::no_route()),
        sub => Ok(scope_of(kind, sub.is_some())),
    }
}

fn check_eviction_name(body: &Value, name: &str) -> Result<(), ApiError> {
    match body.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if n != name => Err(ApiError::bad_request(format!(
            "name in URL does not match name in Eviction object: {name} vs {n}"
        ))),
        _ => Ok(()),
    }
}

/// A k3s-like `/version` answer.
fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.5+k3s1",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-10-01T00:00:00Z", "goVersion": "go1.24.6", "compiler": "gc",
        "platform": "linux/amd64", "emulationMajor": "1", "emulationMinor": "33",
        "minCompatibilityMajor": "1", "minCompatibilityMinor": "32"
    })
}

fn group_list() -> Value {
    let mut groups: Vec<&str> = KINDS
        .iter()
        .map(|k| k.group)
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    let groups = groups
        .iter()
        .map(|group| {
            let gv = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
            json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect::<Vec<_>>();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for kind in KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
    {
        resources.push(json!({
            "name": kind.plural, "singularName": kind.kind.to_lowercase(), "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        }));
        if kind.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", kind.plural), "singularName": "", "namespaced": kind.namespaced,
                "kind": kind.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if kind == kinds::pods() {
            resources.push(json!({
                "name": "pods/eviction", "singularName": "", "namespaced": true,
                "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"],
            }));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": kinds::KINDS.iter()
        .find(|k| k.group == group).map(Kind::api_version).unwrap_or_default(), "resources": resources})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_percent_decoded() {
        let q = parse_query("&labelSelector=app%3Dweb%2Ctier+in+(a)&watch=true");
        assert_eq!(q[0], ("labelSelector".into(), "app=web,tier in (a)".into()));
        assert_eq!(q[1], ("watch".into(), "true".into()));
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn namespaces_and_their_contents_route_apart() {
        let t = parse_target("", "v1", &["namespaces", "ns1"]).unwrap();
        assert_eq!(
            (t.kind.plural, t.name.as_deref()),
            ("namespaces", Some("ns1"))
        );
        let t = parse_target("", "v1", &["namespaces", "ns1", "status"]).unwrap();
        assert_eq!(
            (t.kind.plural, t.subresource.as_deref()),
            ("namespaces", Some("status"))
        );
        let t = parse_target("", "v1", &["namespaces", "ns1", "pods", "p", "eviction"]).unwrap();
        assert_eq!(t.namespace.as_deref(), Some("ns1"));
        assert_eq!(
            (t.kind.plural, t.name.as_deref(), t.subresource.as_deref()),
            ("pods", Some("p"), Some("eviction"))
        );
        assert!(parse_target("", "v1", &["namespaces", "ns1", "nodes"]).is_err());
    }
}
