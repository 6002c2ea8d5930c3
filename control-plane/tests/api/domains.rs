//! Customers' own domains (issue #25): a host proven over HTTP through the
//! cluster's ingress, then served by the subscription.
//!
//! The test process plays the ingress controller (`FixtureIngress`): it
//! reads the Ingresses the control plane made from the cluster (the
//! stand-in, or a real one), routes each request by host and path as
//! Traefik does (Exact before Prefix, longest path first), and answers for
//! the backend: the ownership responder's answer is its ConfigMap's key
//! named by the request's last path segment (what its nginx.conf serves);
//! any other Service answers "app behind <namespace>/<service>". The
//! control plane reaches it through `--domain-check-resolve`, so the check
//! is real HTTP on a real socket; nothing tells the fixture the token.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, ResourceQuota, Secret, Service},
    networking::v1::Ingress,
};
use kube::Api;
use minispod_control_plane::config::{ResolveRule, ServeArgs};
use minispod_proto::v1 as pb;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tonic::Code;

use crate::{
    helpers::{authed, expect_code, violated_fields},
    subscriptions::{
        Env, create, env_with, namespace_of, status_until, subs, until, worker_with_node,
    },
    workers::Stream,
};

/// The test's ingress controller.
struct FixtureIngress {
    addr: SocketAddr,
    /// While false, every request is answered 503 (the name does not reach
    /// the cluster yet).
    open: Arc<AtomicBool>,
    client: Arc<tokio::sync::OnceCell<kube::Client>>,
}

impl FixtureIngress {
    /// Listens now; routes once `attach` gave it the cluster's client.
    async fn start() -> FixtureIngress {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let client: Arc<tokio::sync::OnceCell<kube::Client>> = Arc::default();
        let (o, c) = (open.clone(), client.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (o, c) = (o.clone(), c.clone());
                tokio::spawn(async move {
                    let _ = answer(stream, move |host, path| async move {
                        if !o.load(Ordering::SeqCst) {
                            return (503, "the name does not reach the cluster yet".into());
                        }
                        match c.get() {
                            Some(client) => route(client, &host, &path).await,
                            None => (503, "no cluster yet".into()),
                        }
                    })
                    .await;
                });
            }
        });
        FixtureIngress { addr, open, client }
    }

    fn attach(&self, client: kube::Client) {
        let _ = self.client.set(client);
    }

    /// GET http://<host><path> through this ingress: (status, body).
    async fn get(&self, host: &str, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

/// A server that answers every request 200 with `body`: where a name
/// points when it does not point at the cluster.
async fn elsewhere(body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(
                stream,
                move |_, _| async move { (200, body.to_owned()) },
            ));
        }
    });
    addr
}

/// Reads one request's head (at most 8 KiB) and writes `reply(host, path)`.
async fn answer<F, Fut>(mut stream: TcpStream, reply: F) -> std::io::Result<()>
where
    F: FnOnce(String, String) -> Fut,
    Fut: std::future::Future<Output = (u16, String)>,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
    let host = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let (status, body) = reply(host, path).await;
    let text = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(text.as_bytes()).await
}

/// What the cluster's Ingresses route `host` + `path` to, answered.
async fn route(client: &kube::Client, host: &str, path: &str) -> (u16, String) {
    let Ok(ingresses) = Api::<Ingress>::all(client.clone())
        .list(&Default::default())
        .await
    else {
        return (502, "cannot list ingresses".into());
    };
    // (exact, path length) → (namespace, service).
    let mut best: Option<((bool, usize), (String, String))> = None;
    for ing in ingresses.items {
        let ns = ing.metadata.namespace.clone().unwrap_or_default();
        for rule in ing.spec.and_then(|s| s.rules).unwrap_or_default() {
            if rule.host.as_deref() != Some(host) {
                continue;
            }
            for p in rule.http.map(|h| h.paths).unwrap_or_default() {
                let want = p.path.clone().unwrap_or_else(|| "/".into());
                let exact = p.path_type == "Exact";
                let hit = if exact {
                    path == want
                } else {
                    path.starts_with(&want)
                };
                let Some(service) = p.backend.service.map(|s| s.name) else {
                    continue;
                };
                let rank = (exact, want.len());
                if hit && best.as_ref().is_none_or(|(r, _)| rank > *r) {
                    best = Some((rank, (ns.clone(), service)));
                }
            }
        }
    }
    let Some((_, (ns, service))) = best else {
        return (404, "no route".into());
    };
    let Ok(svc) = Api::<Service>::namespaced(client.clone(), &ns)
        .get(&service)
        .await
    else {
        return (503, "no such service".into());
    };
    let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    for d in deployments {
        let Some(template) = d.spec.map(|s| s.template) else {
            continue;
        };
        let labels = template.metadata.and_then(|m| m.labels).unwrap_or_default();
        if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        // A whole ConfigMap mounted as files: the responder.
        let served = template
            .spec
            .and_then(|s| s.volumes)
            .unwrap_or_default()
            .into_iter()
            .find_map(|v| v.config_map.filter(|c| c.items.is_none()).map(|c| c.name));
        if let Some(cm) = served {
            let key = path.rsplit('/').next().unwrap_or_default();
            let data = Api::<ConfigMap>::namespaced(client.clone(), &ns)
                .get(&cm)
                .await
                .ok()
                .and_then(|c| c.data)
                .unwrap_or_default();
            return match data.get(key) {
                Some(v) if key.len() == 32 => (200, v.clone()),
                _ => (404, "no such token".into()),
            };
        }
    }
    (200, format!("app behind {ns}/{service}"))
}

/// A linked control plane that checks domains every 100 ms through
/// `ingress` (and `more`), with a worker and a customer's RUNNING n8n
/// named `name`: (env, customer token, subscription).
async fn domain_env(
    ingress: &FixtureIngress,
    machine: &str,
    email: &str,
    name: &str,
    more: impl FnOnce(&mut ServeArgs),
) -> (Env, String, pb::Subscription, Stream) {
    let addr = ingress.addr;
    let mut env = env_with(move |a| {
        a.domains.domain_check_every = Duration::from_millis(100);
        a.domains.domain_check_max = Duration::from_millis(400);
        a.domains.domain_check_resolve = vec![ResolveRule {
            host: "*".into(),
            addr,
        }];
        more(a);
    })
    .await;
    ingress.attach(env.cluster.client().await);
    let (_worker, _node, stream) = worker_with_node(&mut env, machine).await;
    let (_, token) = env.customer(email).await;
    let s = create(&env.app, &token, "n8n", name, &[]).await.unwrap();
    let s = status_until(&env.app, &token, &s.id, pb::SubscriptionStatus::Running, 30).await;
    (env, token, s, stream)
}

async fn add(
    env: &Env,
    token: &str,
    sub: &str,
    host: &str,
) -> Result<pb::SubscriptionDomain, tonic::Status> {
    subs(&env.app)
        .add_subscription_domain(authed(
            pb::AddSubscriptionDomainRequest {
                subscription_id: sub.into(),
                host: host.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().domain.unwrap())
}

async fn list(
    env: &Env,
    token: &str,
    sub: &str,
) -> Result<Vec<pb::SubscriptionDomain>, tonic::Status> {
    subs(&env.app)
        .list_subscription_domains(authed(
            pb::ListSubscriptionDomainsRequest {
                subscription_id: sub.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().domains)
}

/// Waits until the domain `id` is in `state`; on a timeout, shows it.
async fn state_until(
    env: &Env,
    token: &str,
    sub: &str,
    id: &str,
    state: pb::DomainState,
    secs: u64,
) -> pb::SubscriptionDomain {
    let mut last = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let d = list(env, token, sub)
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.id == id)
            .expect("the domain is listed");
        if d.state == state as i32 {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {state:?}: {last:?}"
        );
        last = Some(d);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The hosts of the Ingresses in `ns`, by Ingress name.
async fn ingress_hosts(client: &kube::Client, ns: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Api::<Ingress>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .flat_map(|i| {
            let name = i.metadata.name.clone().unwrap_or_default();
            i.spec
                .and_then(|s| s.rules)
                .unwrap_or_default()
                .into_iter()
                .map(move |r| (name.clone(), r.host.unwrap_or_default()))
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_domain_verified_over_http_is_served_beside_the_default_host_and_removing_it_removes_it()
{
    let ingress = FixtureIngress::start().await;
    // Until the test says so, the name does not reach the cluster.
    ingress.open.store(false, Ordering::SeqCst);
    let (env, token, s, _stream) =
        domain_env(&ingress, "m-dom-1", "ann@example.com", "flows", |a| {
            a.domains.custom_domain_issuer = "letsencrypt-custom".into();
        })
        .await;
    let client = env.cluster.client().await;
    let ns = namespace_of(&s.user_id);
    let (e, t, sid, c, n, ing) = (
        &env,
        token.as_str(),
        s.id.as_str(),
        &client,
        ns.as_str(),
        &ingress,
    );

    let d = add(&env, &token, &s.id, " Shop.Example.COM. ")
        .await
        .unwrap();
    assert_eq!(d.host, "shop.example.com");
    assert_eq!(d.state, pb::DomainState::Pending as i32);
    assert_eq!(d.dns_target, "flows.apps.example.test");
    assert_eq!(d.url, "https://shop.example.com");
    let token_part = d
        .check_url
        .strip_prefix("http://shop.example.com/.well-known/minispod/")
        .expect("the check URL is under the host");
    assert_eq!(token_part.len(), 32);

    // Pending: the check fails with what it saw, and is retried; the
    // challenge Ingress routes the one URL to the responder, which runs
    // with room in the quota.
    let pending = until(20, "a failed check", || async move {
        let d = list(e, t, sid).await.unwrap().remove(0);
        (d.checked_at.is_some()).then_some(d)
    })
    .await;
    assert_eq!(pending.state, pb::DomainState::Pending as i32);
    assert!(
        pending.reason.contains("answered 503"),
        "{}",
        pending.reason
    );
    assert!(pending.next_check_at.is_some());
    let challenge = until(20, "the challenge Ingress", || async move {
        Api::<Ingress>::namespaced(c.clone(), n)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|i| {
                i.spec
                    .as_ref()
                    .and_then(|s| s.rules.as_ref())
                    .is_some_and(|r| {
                        r.iter()
                            .any(|r| r.host.as_deref() == Some("shop.example.com"))
                    })
            })
    })
    .await;
    let path = challenge
        .spec
        .unwrap()
        .rules
        .unwrap()
        .remove(0)
        .http
        .unwrap()
        .paths
        .remove(0);
    assert_eq!(path.path_type, "Exact");
    assert_eq!(
        path.path.as_deref(),
        Some(&d.check_url["http://shop.example.com".len()..])
    );
    assert_eq!(
        path.backend.service.as_ref().unwrap().name,
        "minispod--domains"
    );
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("minispod--domains")
        .await
        .expect("the responder runs while a domain is pending");
    let quota = Api::<ResourceQuota>::namespaced(client.clone(), &ns)
        .get("minispod")
        .await
        .unwrap();
    assert_eq!(
        quota.spec.unwrap().hard.unwrap()["pods"].0,
        "2",
        "n8n and the responder"
    );
    // The subscription's own Ingress holds only its default host meanwhile.
    assert_eq!(
        ingress_hosts(&client, &ns)
            .await
            .into_iter()
            .filter(|(n, _)| n == "flows")
            .collect::<Vec<_>>(),
        [("flows".to_string(), "flows.apps.example.test".to_string())]
    );

    // The name reaches the cluster: the next check verifies it.
    ingress.open.store(true, Ordering::SeqCst);
    let verified = state_until(&env, &token, &s.id, &d.id, pb::DomainState::Verified, 20).await;
    assert!(verified.verified_at.is_some());
    assert!(
        verified.reason.contains("cert-manager"),
        "no cert-manager in the stand-in: {}",
        verified.reason
    );
    // The host now leads where the default host does, with TLS by the
    // custom-domain issuer; the default host still does.
    let served = until(20, "the domain to serve the app", || async move {
        let (status, body) = ing.get("shop.example.com", "/").await;
        (status == 200 && body.starts_with("app behind")).then_some(body)
    })
    .await;
    let (status, default) = ingress.get("flows.apps.example.test", "/").await;
    assert_eq!((status, &default), (200, &served));
    assert_eq!(served, format!("app behind {ns}/flows-n8n"));
    let hosts = ingress_hosts(&client, &ns).await;
    assert!(
        hosts.contains(&("flows".into(), "flows.apps.example.test".into())),
        "{hosts:?}"
    );
    let (domain_ingress, _) = hosts
        .iter()
        .find(|(_, h)| h == "shop.example.com")
        .cloned()
        .expect("an Ingress holds the host");
    let ing = Api::<Ingress>::namespaced(client.clone(), &ns)
        .get(&domain_ingress)
        .await
        .unwrap();
    assert_eq!(
        ing.metadata.annotations.unwrap()["cert-manager.io/cluster-issuer"],
        "letsencrypt-custom"
    );
    let tls = ing.spec.unwrap().tls.unwrap().remove(0);
    assert_eq!(tls.hosts.unwrap(), ["shop.example.com"]);
    let tls_secret = tls.secret_name.unwrap();
    // Nothing pending: the responder goes.
    until(20, "the responder to go", || async move {
        Api::<Deployment>::namespaced(c.clone(), n)
            .get_opt("minispod--domains")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;

    // cert-manager would now write the certificate's Secret.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": { "name": tls_secret },
                "type": "kubernetes.io/tls",
                "data": { "tls.crt": "", "tls.key": "" },
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    // Removing it removes it from the cluster; the default host stays.
    subs(&env.app)
        .remove_subscription_domain(authed(
            pb::RemoveSubscriptionDomainRequest {
                subscription_id: s.id.clone(),
                domain_id: d.id.clone(),
            },
            &token,
        ))
        .await
        .unwrap();
    assert!(list(&env, &token, &s.id).await.unwrap().is_empty());
    let (di, ts, sec) = (domain_ingress.as_str(), tls_secret.as_str(), &secrets);
    until(20, "the domain's Ingress and Secret to go", || async move {
        let gone = Api::<Ingress>::namespaced(c.clone(), n)
            .get_opt(di)
            .await
            .unwrap()
            .is_none();
        let secret = sec.get_opt(ts).await.unwrap();
        (gone && secret.is_none()).then_some(())
    })
    .await;
    assert_eq!(ingress.get("shop.example.com", "/").await.0, 404);
    assert_eq!(
        ingress.get("flows.apps.example.test", "/").await,
        (200, default)
    );
    // The host is free again at once.
    let again = add(&env, &token, &s.id, "shop.example.com").await.unwrap();
    assert_eq!(again.state, pb::DomainState::Pending as i32);
}

#[tokio::test]
async fn a_host_another_customer_holds_is_refused_and_nothing_is_written() {
    let ingress = FixtureIngress::start().await;
    ingress.open.store(false, Ordering::SeqCst);
    let (env, ann, ann_sub, _stream) =
        domain_env(&ingress, "m-dom-2", "ann@example.com", "annshop", |a| {
            a.subscriptions.subscription_change_burst = 100;
        })
        .await;
    let client = env.cluster.client().await;
    let (bob_id, bob) = env.customer("bob@example.com").await;
    let bob_sub = create(&env.app, &bob, "n8n", "bobshop", &[]).await.unwrap();
    status_until(
        &env.app,
        &bob,
        &bob_sub.id,
        pb::SubscriptionStatus::Running,
        30,
    )
    .await;

    add(&env, &ann, &ann_sub.id, "shop.example.com")
        .await
        .unwrap();
    let refused = expect_code(
        add(&env, &bob, &bob_sub.id, "SHOP.example.com.").await,
        Code::AlreadyExists,
    );
    let message = refused.message().to_owned();
    for secret in ["ann", "annshop", &ann_sub.id, &ann_sub.user_id] {
        assert!(!message.contains(secret), "{message:?} names {secret:?}");
    }
    // Nothing was written for bob, in the store or the cluster.
    assert!(list(&env, &bob, &bob_sub.id).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ingress_hosts(&client, &namespace_of(&bob_id)).await,
        [(
            "bobshop".to_string(),
            "bobshop.apps.example.test".to_string()
        )]
    );

    // Bob cannot add a domain to ann's subscription, nor list hers.
    expect_code(
        add(&env, &bob, &ann_sub.id, "bob.example.org").await,
        Code::NotFound,
    );
    expect_code(list(&env, &bob, &ann_sub.id).await, Code::NotFound);
    assert_eq!(list(&env, &ann, &ann_sub.id).await.unwrap().len(), 1);

    // Names that are not a customer's own are refused by field.
    for bad in [
        "blog.apps.example.test",
        "203.0.113.9",
        "*.example.com",
        "localhost",
    ] {
        let status = expect_code(
            add(&env, &bob, &bob_sub.id, bad).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), ["host"], "{bad}");
    }
    // And there is a bound per subscription.
    for n in 0..5 {
        add(&env, &bob, &bob_sub.id, &format!("s{n}.bob.example.org"))
            .await
            .unwrap();
    }
    let over = expect_code(
        add(&env, &bob, &bob_sub.id, "s5.bob.example.org").await,
        Code::ResourceExhausted,
    );
    assert!(
        over.message().contains("at most 5 domains"),
        "{}",
        over.message()
    );
}

#[tokio::test]
async fn a_wrong_answer_never_verifies_and_the_domain_fails_after_the_give_up() {
    let ingress = FixtureIngress::start().await;
    // wrong.example.net points at someone else's server, which answers
    // every path with its own page.
    let other = elsewhere("welcome to my page").await;
    let dir = crate::helpers::TempDir::new();
    let sink = crate::smtp::SmtpSink::start(&dir.0);
    let (env, token, s, _stream) =
        domain_env(&ingress, "m-dom-3", "ann@example.com", "wrongs", |a| {
            crate::mail::with_mail(a, &sink);
            a.domains.domain_check_give_up = Duration::from_secs(5);
            a.domains.domain_check_resolve.insert(
                0,
                ResolveRule {
                    host: "wrong.example.net".into(),
                    addr: other,
                },
            );
        })
        .await;
    let client = env.cluster.client().await;
    let ns = namespace_of(&s.user_id);
    let (e, t, sid, c, n) = (&env, token.as_str(), s.id.as_str(), &client, ns.as_str());
    let d = add(&env, &token, &s.id, "wrong.example.net").await.unwrap();
    let seen = until(20, "a failed check", || async move {
        let d = list(e, t, sid).await.unwrap().remove(0);
        (d.checked_at.is_some()).then_some(d)
    })
    .await;
    assert_eq!(seen.state, pb::DomainState::Pending as i32);
    assert!(
        seen.reason.contains("not with this domain's token"),
        "{}",
        seen.reason
    );
    // The cluster's own ingress would answer the token: the control plane
    // made it, but the name does not lead there.
    let (status, body) = ingress
        .get(
            "wrong.example.net",
            &d.check_url["http://wrong.example.net".len()..],
        )
        .await;
    assert_eq!(
        (status, body.trim()),
        (200, &d.check_url[d.check_url.len() - 32..])
    );

    let failed = state_until(&env, &token, &s.id, &d.id, pb::DomainState::Failed, 20).await;
    assert!(
        failed.reason.starts_with("not verified within 5s: "),
        "{}",
        failed.reason
    );
    assert!(failed.verified_at.is_none());
    // Its owner is told, once.
    let told = until(20, "the owner's mail", || async {
        let m: Vec<_> = sink
            .received_by("ann@example.com")
            .into_iter()
            .filter(|m| m.subject == "wrong.example.net could not be verified for wrongs")
            .collect();
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert!(
        told[0].text.contains("no longer checked"),
        "{}",
        told[0].text
    );
    // Never served: its challenge Ingress and the responder go.
    until(20, "the domain's objects to go", || async move {
        let hosts = ingress_hosts(c, n).await;
        let responder = Api::<Deployment>::namespaced(c.clone(), n)
            .get_opt("minispod--domains")
            .await
            .unwrap();
        (hosts == [("wrongs".to_string(), "wrongs.apps.example.test".to_string())]
            && responder.is_none())
        .then_some(())
    })
    .await;
    // A failed claim holds nothing: another customer may add the host.
    let (_, bob) = env.customer("bob@example.com").await;
    let bob_sub = create(&env.app, &bob, "n8n", "bobs", &[]).await.unwrap();
    add(&env, &bob, &bob_sub.id, "wrong.example.net")
        .await
        .unwrap();
    let told: Vec<_> = sink
        .received_by("ann@example.com")
        .into_iter()
        .filter(|m| m.subject.contains("could not be verified"))
        .collect();
    assert_eq!(told.len(), 1, "once: {told:?}");
}
