//! The access table (`api::access`): every method the server serves has
//! an entry, a method without one is refused, and the layer refuses before
//! any handler runs: a User method without a token, an Admin method with a
//! customer's token, an Agent method without a certificate.

use bytes::Bytes;
use http_body_util::BodyExt;
use minispod_control_plane::api::access::{Access, TABLE, rule};
use prost::Message;
use tonic::{Code, transport::Channel};

use crate::helpers::spawn_app;

/// "/package.Service/Method" of every method in an encoded descriptor set.
fn methods(encoded: &[u8]) -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(encoded).expect("descriptor set");
    let mut out = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                out.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    out
}

/// Every method of every service the server registers (the descriptor
/// sets its reflection is built from, plus health and reflection).
fn served_methods() -> Vec<String> {
    let mut all = methods(minispod_proto::FILE_DESCRIPTOR_SET);
    all.extend(methods(tonic_health::pb::FILE_DESCRIPTOR_SET));
    all.extend(methods(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET));
    all.extend(methods(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET));
    all
}

#[test]
fn every_served_method_has_an_entry_and_every_entry_is_served() {
    let served = served_methods();
    // The minispod package alone has more than 60 methods: a walk that
    // found none would prove nothing.
    assert!(
        served
            .iter()
            .filter(|m| m.starts_with("/minispod.v1."))
            .count()
            > 60,
        "{served:?}"
    );
    let missing: Vec<&String> = served.iter().filter(|m| rule(m).is_none()).collect();
    assert!(
        missing.is_empty(),
        "methods without an access rule: {missing:?}"
    );
    let stale: Vec<&str> = TABLE
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !served.iter().any(|m| m == p))
        .collect();
    assert!(
        stale.is_empty(),
        "rules for methods nobody serves: {stale:?}"
    );
    let mut paths: Vec<&str> = TABLE.iter().map(|(p, _)| *p).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), TABLE.len(), "a method listed twice");
}

#[test]
fn made_up_methods_have_no_rule() {
    assert_eq!(rule("/minispod.v1.UserService/MadeUp"), None);
    assert_eq!(rule("/minispod.v1.NoSuchService/ListUsers"), None);
    assert_eq!(rule("/minispod.v1.UserService/listusers"), None);
    assert_eq!(rule(""), None);
    assert_eq!(
        rule("/minispod.v1.UserService/ListUsers"),
        Some(Access::Admin)
    );
}

/// A unary-style call to `path` with an empty message and, when given,
/// `authorization: Bearer <token>`; its gRPC status code and message.
async fn call(channel: &Channel, path: &str, token: Option<&str>) -> (Code, String) {
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    // One empty message: a 5-byte frame header of length 0.
    let body = tonic::body::Body::new(http_body_util::Full::new(Bytes::from_static(&[
        0, 0, 0, 0, 0,
    ])));
    let req = req.body(body).unwrap();
    let mut svc = channel.clone();
    use tower::{Service, ServiceExt};
    let resp = svc.ready().await.unwrap().call(req).await.unwrap();
    let status_of = |h: &http::HeaderMap| {
        let code = h
            .get("grpc-status")?
            .to_str()
            .ok()?
            .parse::<i32>()
            .ok()
            .map(Code::from_i32)?;
        let message = h
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .map(percent_decode)
            .unwrap_or_default();
        Some((code, message))
    };
    if let Some(s) = status_of(resp.headers()) {
        return s;
    }
    let collected = resp.into_body().collect().await.unwrap();
    collected
        .trailers()
        .and_then(status_of)
        .expect("a grpc-status")
}

/// grpc-message is percent-encoded.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn made_up_methods_are_refused() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for path in [
        "/minispod.v1.UserService/MadeUp",
        "/minispod.v1.NoSuchService/ListUsers",
    ] {
        for token in [None, Some(admin.as_str())] {
            let (code, message) = call(&app.channel, path, token).await;
            assert_eq!(code, Code::Unimplemented, "{path}: {message}");
            assert!(message.contains(path), "{path}: {message}");
        }
    }
}

#[tokio::test]
async fn the_layer_refuses_before_any_handler() {
    let app = spawn_app().await;
    let (_, customer) = app
        .register("access@example.com", "a long enough password")
        .await;
    let admin = app.admin_token().await;
    let mut services = std::collections::BTreeSet::new();
    for (path, access) in TABLE {
        let service = path.rsplit_once('/').unwrap().0;
        match access {
            Access::User | Access::Admin => {
                // No token: UNAUTHENTICATED, whatever the method.
                let (code, message) = call(&app.channel, path, None).await;
                assert_eq!(code, Code::Unauthenticated, "{path}: {message}");
                assert_eq!(message, "missing authorization header", "{path}");
                // A token that is not one: UNAUTHENTICATED too.
                let (code, _) = call(&app.channel, path, Some("not-a-token")).await;
                assert_eq!(code, Code::Unauthenticated, "{path}");
                services.insert(service);
            }
            Access::Agent => {
                // No client certificate (a token does not stand in for one).
                let (code, message) = call(&app.channel, path, Some(&admin)).await;
                assert_eq!(code, Code::Unauthenticated, "{path}: {message}");
                assert!(message.contains("client certificate"), "{path}: {message}");
                services.insert(service);
            }
            Access::Public | Access::MaybeUser => {}
        }
        if *access == Access::Admin {
            let (code, message) = call(&app.channel, path, Some(&customer)).await;
            assert_eq!(code, Code::PermissionDenied, "{path}: {message}");
            assert!(message.contains("ROLE_ADMINISTRATOR"), "{path}: {message}");
        }
    }
    // Every MiniSpod service has at least one guarded method, and each was
    // tried.
    for s in [
        "/minispod.v1.AuthService",
        "/minispod.v1.UserService",
        "/minispod.v1.CatalogService",
        "/minispod.v1.WorkerService",
        "/minispod.v1.AgentService",
        "/minispod.v1.SubscriptionService",
        "/minispod.v1.NotificationService",
        "/minispod.v1.HistoryService",
    ] {
        assert!(services.contains(s), "{s} has no guarded method");
    }
    // An administrator passes the layer: the handler answers (here, with
    // its own validation of the empty request).
    let (code, message) = call(
        &app.channel,
        "/minispod.v1.UserService/GetUser",
        Some(&admin),
    )
    .await;
    assert_eq!(code, Code::InvalidArgument, "{message}");
}

#[tokio::test]
async fn a_deactivated_account_is_refused_at_once() {
    let app = spawn_app().await;
    let (id, customer) = app
        .register("gone@example.com", "a long enough password")
        .await;
    let (code, _) = call(
        &app.channel,
        "/minispod.v1.AuthService/GetProfile",
        Some(&customer),
    )
    .await;
    assert_eq!(code, Code::Ok);
    let admin = app.admin_token().await;
    app.users()
        .set_user_active(crate::helpers::authed(
            minispod_proto::v1::SetUserActiveRequest { id, active: false },
            &admin,
        ))
        .await
        .expect("deactivate");
    // The same, still unexpired access token.
    let (code, message) = call(
        &app.channel,
        "/minispod.v1.AuthService/GetProfile",
        Some(&customer),
    )
    .await;
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert_eq!(message, "the account is deactivated");
}
