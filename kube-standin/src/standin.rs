//! The stand-in server: HTTPS with a fresh CA on a loopback port, bearer
//! token authentication, and a kubeconfig that reaches it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use base64::Engine;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::api::Api;
use crate::controllers::Behaviour;
use crate::http::{Settings, Shared, serve};
use crate::logs::PodLogs;
use crate::rbac::UserInfo;
use crate::record::Recorded;

/// Namespace of the control plane's ServiceAccount (as the shipped
/// deploy/kubernetes/control-plane-rbac.yaml names it).
pub const CONTROL_PLANE_NAMESPACE: &str = "minispod-system";
/// Name of the control plane's ServiceAccount.
pub const CONTROL_PLANE_ACCOUNT: &str = "minispod-control-plane";

/// An in-process stand-in for kube-apiserver, serving until stopped (or
/// dropped).
pub struct StandIn {
    addr: SocketAddr,
    ca_pem: String,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    server: Option<tokio::task::JoinHandle<()>>,
}

struct Identity {
    ca_pem: String,
    cert: CertificateDer<'static>,
    ca: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn identity() -> anyhow::Result<Identity> {
    let ca_key = KeyPair::generate().context("generate the CA key")?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "minispod-kube-standin-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).context("self-sign the CA")?;
    let issuer = Issuer::new(ca_params, &ca_key);
    let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .context("server certificate names")?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().context("generate the server key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("sign the server certificate")?;
    Ok(Identity {
        ca_pem: ca_cert.pem(),
        cert: cert.der().clone(),
        ca: ca_cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    })
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    minispod_support::hex(&bytes)
}

impl StandIn {
    /// Start on 127.0.0.1 (a free port) with default settings: a fresh
    /// self-signed CA whose server certificate covers 127.0.0.1 and
    /// localhost, and a random bearer token every request must carry.
    pub async fn start() -> anyhow::Result<StandIn> {
        StandIn::start_with(Settings::default()).await
    }

    /// Start with these limits and timings (a short history to test 410
    /// Gone, a short bookmark interval).
    pub async fn start_with(settings: Settings) -> anyhow::Result<StandIn> {
        let identity = identity()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_no_client_auth()
            .with_single_cert(vec![identity.cert, identity.ca], identity.key)
            .context("TLS server identity")?;
        // kube-rs speaks HTTP/1.1 to the API server.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the stand-in")?;
        let addr = listener.local_addr()?;
        let token = random_token();
        let users = vec![
            (token.clone(), UserInfo::admin()),
            (
                random_token(),
                UserInfo::service_account(CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_ACCOUNT),
            ),
        ];
        let shared = Arc::new(Shared {
            api: Mutex::new(Api::new(settings.history_limit)),
            token,
            users,
            forbidden: Mutex::new(VecDeque::new()),
            log: Mutex::new(VecDeque::new()),
            behaviour: Behaviour::new(settings.pod_ready_delay),
            logs: PodLogs::new(settings.log_lines_per_container),
            settings,
            addr,
        });
        let (shutdown, stopped) = watch::channel(false);
        // The controllers stop with the server (they watch the same flag).
        tokio::spawn(crate::controllers::run(shared.clone(), stopped.clone()));
        let server = tokio::spawn(accept_loop(listener, acceptor, shared.clone(), stopped));
        tracing::debug!(%addr, "kube stand-in listening");
        Ok(StandIn {
            addr,
            ca_pem: identity.ca_pem,
            shared,
            shutdown,
            server: Some(server),
        })
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of the API, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA certificate (PEM) that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The administrator's bearer token (`system:admin` in
    /// `system:masters`: every request is allowed).
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// The bearer token of the control plane's ServiceAccount
    /// (`system:serviceaccount:minispod-system:minispod-control-plane`):
    /// RBAC decides what it may do.
    pub fn control_plane_token(&self) -> &str {
        self.shared
            .users
            .iter()
            .find(|(_, u)| !u.is_superuser())
            .map(|(t, _)| t.as_str())
            .expect("the stand-in has a control plane token")
    }

    /// The user the control plane's token authenticates.
    pub fn control_plane_user(&self) -> UserInfo {
        UserInfo::service_account(CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_ACCOUNT)
    }

    /// An administrator's kubeconfig for `server` (default: this
    /// stand-in's URL) with the CA, the admin token, and
    /// `tls-server-name: 127.0.0.1`, so that it also works through a TCP
    /// proxy listening elsewhere.
    pub fn kubeconfig(&self, server: Option<&str>) -> String {
        self.kubeconfig_with_token(server, &self.shared.token)
    }

    /// The same kubeconfig with another bearer token (see
    /// `control_plane_token`).
    pub fn kubeconfig_with_token(&self, server: Option<&str>, token: &str) -> String {
        let server = server.map_or_else(|| self.url(), str::to_string);
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: standin
  cluster:
    server: {server}
    certificate-authority-data: {ca}
    tls-server-name: 127.0.0.1
users:
- name: standin
  user:
    token: {token}
contexts:
- name: standin
  context:
    cluster: standin
    user: standin
current-context: standin
"
        )
    }

    /// The requests of users outside `system:masters` the stand-in refused
    /// with 403 (RBAC or admission), oldest first (the last 1000).
    pub fn forbidden_requests(&self) -> Vec<Recorded> {
        self.shared
            .forbidden
            .lock()
            .expect("the forbidden log lock is never poisoned")
            .iter()
            .cloned()
            .collect()
    }

    /// Forget the refused requests so far.
    pub fn clear_forbidden_requests(&self) {
        self.shared
            .forbidden
            .lock()
            .expect("the forbidden log lock is never poisoned")
            .clear();
    }

    /// Every request served, oldest first (bounded by the settings' log
    /// length).
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared
            .log
            .lock()
            .expect("the log lock is never poisoned")
            .iter()
            .cloned()
            .collect()
    }

    /// Forget the requests served so far.
    pub fn clear_requests(&self) {
        self.shared
            .log
            .lock()
            .expect("the log lock is never poisoned")
            .clear();
    }

    /// From now on pulls of `image` (exactly as pod specs name it) fail:
    /// its containers wait in ErrImagePull, then ImagePullBackOff.
    pub fn set_image_unpullable(&self, image: &str) {
        self.shared.behaviour.set_image_unpullable(image);
    }

    /// From now on containers of `image` crash as they start: waiting in
    /// CrashLoopBackOff, their restartCount climbing every back-off.
    pub fn set_image_crashing(&self, image: &str) {
        self.shared.behaviour.set_image_crashing(image);
    }

    /// From now on containers of `image` (exactly as pod specs name it)
    /// that have a readiness probe run but fail it: Running, never Ready.
    pub fn set_image_readiness_failing(&self, image: &str) {
        self.shared.behaviour.set_image_readiness_failing(image);
    }

    /// Pods bound from now on have their containers running and Ready this
    /// long after the binding.
    pub fn set_pod_ready_delay(&self, delay: std::time::Duration) {
        self.shared.behaviour.set_pod_ready_delay(delay);
    }

    /// Append lines to the log of a container of a pod (as its process
    /// would print them); 404 when the pod does not exist, 400 when it has
    /// no such container.
    pub fn append_pod_log(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        lines: &[&str],
    ) -> Result<(), crate::error::ApiError> {
        let uid = self.container_uid(namespace, pod, container)?;
        let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        self.shared.logs.append(&uid, container, &lines);
        Ok(())
    }

    /// Append one line of `bytes` bytes to the log of a container of a pod,
    /// as a process printing that much before its next newline would. The
    /// line is generated while it is served (64 KiB at a time), never
    /// stored. Errors as [`StandIn::append_pod_log`].
    pub fn append_generated_pod_log_line(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        bytes: u64,
    ) -> Result<(), crate::error::ApiError> {
        let uid = self.container_uid(namespace, pod, container)?;
        self.shared.logs.append_generated(&uid, container, bytes);
        Ok(())
    }

    /// The uid of the pod, checking it has the container.
    fn container_uid(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<String, crate::error::ApiError> {
        let object = {
            let api = self.shared.api.lock().unwrap_or_else(|e| e.into_inner());
            api.get(crate::kinds::pods(), namespace, pod)?
        };
        let has_container = ["containers", "initContainers"].iter().any(|list| {
            object
                .pointer(&format!("/spec/{list}"))
                .and_then(serde_json::Value::as_array)
                .is_some_and(|l| l.iter().any(|c| c["name"] == container))
        });
        if !has_container {
            return Err(crate::error::ApiError::bad_request(format!(
                "container {container} is not valid for pod {pod}"
            )));
        }
        Ok(object
            .pointer("/metadata/uid")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// Stop serving: close the listener and every connection (open watches
    /// end).
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    // Dropping the set at the end aborts every connection task.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(move |request| serve(shared.clone(), request));
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, "stand-in connection ended");
            }
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
}
