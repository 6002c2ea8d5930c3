//! The owner gets the instance, nobody else (issue #22): a new
//! subscription's address answers only its owner's browser until the owner
//! opens it to everyone. What the control plane puts on the cluster is read
//! back from it, and the gate it rendered runs in a real nginx in front of
//! a stand-in for the application's setup page.

use std::{
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Secret, Service},
};
use kube::Api;
use minispod_control_plane::subscriptions::gate;
use minispod_kube_standin::TestCluster;
use minispod_proto::v1 as pb;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tonic::Code;

use crate::{
    helpers::{TempDir, authed, expect_code},
    subscriptions::{
        create, customer, get, linked_app_with, namespace_of, status_until, subs, until,
        worker_with_node_on,
    },
    workers::Admin,
};

/// n8n's port: the seeded template's exposed one.
const N8N_PORT: i32 = 5678;

async fn set_public(
    app: &crate::helpers::TestApp,
    token: &str,
    id: &str,
    public: bool,
) -> Result<pb::Subscription, tonic::Status> {
    subs(app)
        .set_subscription_access(authed(
            pb::SetSubscriptionAccessRequest {
                id: id.into(),
                public,
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().subscription.unwrap())
}

/// What the cluster holds of the subscription `flows`: the Service's
/// target for the `http` port, the pod's container names, the gate's
/// config (None once open).
async fn deployed(client: &kube::Client, ns: &str) -> (String, Vec<String>, Option<String>) {
    let service = Api::<Service>::namespaced(client.clone(), ns)
        .get("flows-n8n")
        .await
        .unwrap();
    let port = service.spec.unwrap().ports.unwrap().remove(0);
    let target = match port.target_port.unwrap() {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => i.to_string(),
    };
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get("flows-n8n")
        .await
        .unwrap();
    let containers = deployment
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get("flows-secrets")
        .await
        .unwrap();
    let conf = secret
        .data
        .unwrap_or_default()
        .get(gate::CONF_KEY)
        .map(|b| String::from_utf8(b.0.clone()).unwrap());
    (target, containers, conf)
}

/// A stand-in for the application: answers every request with its setup
/// page, and counts them.
async fn application() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let hits = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                hits.fetch_add(1, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&buf);
                let host = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Host: "))
                    .unwrap_or("")
                    .to_owned();
                let body = format!("n8n owner setup for {host}");
                let _ = conn
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                             Connection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (port, hits)
}

/// nginx running `conf`, stopped on drop.
struct Nginx(Child, #[allow(dead_code)] TempDir);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx_binary() -> &'static str {
    if std::path::Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

/// Starts nginx on `conf` as the pod's gate container runs it (prefix,
/// config file, errors to stderr, in the foreground).
async fn start_nginx(conf: &str) -> Nginx {
    let dir = TempDir::new();
    let conf_path = dir.0.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(format!("{}/", dir.0.display()))
        .arg("-c")
        .arg(&conf_path)
        .args(["-e", "stderr", "-g", "daemon off;"])
        .stdin(Stdio::null())
        .spawn()
        .expect("nginx (Debian's nginx-light; .ci/test.sh installs it)");
    Nginx(child, dir)
}

/// One HTTP/1.1 request to `port` with `headers`: (status, headers, body).
async fn request(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: flows.apps.example.test\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head[9..12].parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

#[tokio::test]
async fn a_stranger_cannot_reach_a_new_instances_setup_but_its_owner_can() {
    let cluster = TestCluster::start().await.unwrap();
    let app = linked_app_with(&cluster, None, |_| {}).await;
    let mut admin = Admin::of(&app).await;
    let _worker = worker_with_node_on(&cluster, &app, &mut admin, "m-gate").await;
    let (user, token) = customer(&app, "ann@example.com").await;
    let (_, stranger) = customer(&app, "mallory@example.com").await;
    let client = cluster.client().await;
    let ns = namespace_of(&user);
    cluster.delete_on_drop(&ns);

    let s = create(&app, &token, "n8n", "flows", &[]).await.unwrap();
    assert!(!s.public, "a new subscription starts closed");
    status_until(&app, &token, &s.id, pb::SubscriptionStatus::Running, 30).await;

    // The owner gets the link through the gate; nobody else does.
    let owner = get(&app, &token, &s.id).await.unwrap();
    let prefix = format!("https://flows.apps.example.test{}?token=", gate::OPEN_PATH);
    let secret = owner
        .owner_url
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("owner_url {:?}", owner.owner_url))
        .to_owned();
    assert_eq!(
        get(&app, &admin.token, &s.id).await.unwrap().owner_url,
        "",
        "an administrator who had the link could be the first visitor"
    );
    expect_code(get(&app, &stranger, &s.id).await, Code::NotFound);
    expect_code(
        set_public(&app, &stranger, &s.id, true).await,
        Code::NotFound,
    );

    // On the cluster, the exposed port leads to the gate, in the same pod.
    let (target, containers, conf) = deployed(&client, &ns).await;
    assert_eq!(target, gate::PORT_NAME);
    assert_eq!(containers, ["n8n", gate::CONTAINER]);
    let conf = conf.expect("the gate's config in the subscription's Secret");
    assert!(conf.contains(&secret));

    // The gate as rendered, in a real nginx: only its listen port and the
    // application's are moved to free ones on this machine.
    let listen = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gate_port = listen.local_addr().unwrap().port();
    drop(listen);
    let (app_port, hits) = application().await;
    let listen_line = format!("listen {};", 8080);
    let upstream = format!("proxy_pass http://127.0.0.1:{N8N_PORT};");
    assert!(conf.contains(&listen_line) && conf.contains(&upstream));
    let local = conf
        .replace(&listen_line, &format!("listen 127.0.0.1:{gate_port};"))
        .replace(
            &upstream,
            &format!("proxy_pass http://127.0.0.1:{app_port};"),
        );
    let _nginx = start_nginx(&local).await;
    until(10, "nginx to listen", || async move {
        TcpStream::connect(("127.0.0.1", gate_port)).await.ok()
    })
    .await;

    // A stranger: the closed page, for every path, and the application
    // never sees the request.
    for path in ["/", "/setup", "/rest/owner/setup"] {
        let (status, _, body) = request(gate_port, path, &[]).await;
        assert_eq!(status, 403, "{path}");
        assert!(body.contains("Not open yet"), "{body}");
    }
    let (status, _, _) = request(gate_port, &format!("{}?token=guess", gate::OPEN_PATH), &[]).await;
    assert_eq!(status, 403);
    let (status, _, _) = request(
        gate_port,
        "/",
        &[("Cookie", &format!("{}=guess", gate::COOKIE))],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // The owner's link sets the cookie (Secure behind TLS) and goes on.
    let (status, head, _) = request(
        gate_port,
        &format!("{}?token={secret}", gate::OPEN_PATH),
        &[("X-Forwarded-Proto", "https")],
    )
    .await;
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("\r\nLocation: /\r\n"), "{head}");
    let cookie_line = head
        .lines()
        .find(|l| l.starts_with("Set-Cookie: "))
        .expect("a cookie");
    let cookie = format!("{}={secret}", gate::COOKIE);
    assert!(cookie_line.contains(&cookie), "{cookie_line}");
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(cookie_line.contains(attribute), "{cookie_line}");
    }
    let (status, _, body) = request(gate_port, "/setup", &[("Cookie", &cookie)]).await;
    assert_eq!(status, 200);
    assert_eq!(body, "n8n owner setup for flows.apps.example.test");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Opened to everyone: the Service leads to n8n itself, the gate goes.
    let opened = set_public(&app, &token, &s.id, true).await.unwrap();
    assert!(opened.public);
    assert_eq!(get(&app, &token, &s.id).await.unwrap().owner_url, "");
    let c = client.clone();
    let ns2 = ns.clone();
    until(20, "the gate to go", || {
        let (c, ns) = (c.clone(), ns2.clone());
        async move {
            let (target, containers, conf) = deployed(&c, &ns).await;
            (target == "http" && containers == ["n8n"] && conf.is_none()).then_some(())
        }
    })
    .await;

    // Closed again: a new link; the old one no longer opens it.
    let closed = set_public(&app, &admin.token, &s.id, false).await.unwrap();
    assert!(!closed.public, "an administrator may close it too");
    let again = get(&app, &token, &s.id).await.unwrap().owner_url;
    assert!(again.starts_with(&prefix) && !again.ends_with(&secret));
    let c = client.clone();
    let conf = until(20, "the gate to come back", || {
        let (c, ns) = (c.clone(), ns.clone());
        async move {
            let (target, _, conf) = deployed(&c, &ns).await;
            conf.filter(|_| target == gate::PORT_NAME)
        }
    })
    .await;
    assert!(!conf.contains(&secret));
    assert!(conf.contains(again.strip_prefix(&prefix).unwrap()));
}
