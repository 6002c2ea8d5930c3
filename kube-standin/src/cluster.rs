//! `TestCluster`: what cluster tests run against — a real cluster when
//! `MINISPOD_TEST_KUBECONFIG` names one, a fresh stand-in otherwise — always
//! behind a proxy the test can cut.
//!
//! Two identities, as in production: fixtures and assertions use an
//! administrator's client, the control plane under test gets
//! (`kubeconfig_path`) the credentials of its ServiceAccount, whose rights
//! are exactly those of the shipped deploy/kubernetes/control-plane-rbac.yaml
//! (applied at start by the administrator). On the stand-in, which enforces
//! RBAC, a request of the control plane refused with 403 fails the test
//! (when the `TestCluster` is dropped) unless the test said it expects
//! refusals (`expect_forbidden`).

use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::proxy::CutProxy;
use crate::standin::StandIn;

/// Names a real cluster's kubeconfig; unset: tests use a stand-in.
pub const KUBECONFIG_ENV: &str = "MINISPOD_TEST_KUBECONFIG";
/// With `MINISPOD_TEST_KUBECONFIG`: the control plane's own kubeconfig on
/// that cluster (a token of the ServiceAccount minispod-system/
/// minispod-control-plane), which the control plane under test gets.
pub const CONTROL_PLANE_KUBECONFIG_ENV: &str = "MINISPOD_TEST_CONTROL_PLANE_KUBECONFIG";
/// When set, cluster tests must run against a real cluster.
pub const REQUIRE_ENV: &str = "MINISPOD_TEST_REQUIRE_KUBERNETES";
/// The shipped RBAC manifest, applied by the administrator at start.
pub const RBAC_MANIFEST: &str = include_str!("../../deploy/kubernetes/control-plane-rbac.yaml");

/// Call at the top of each cluster test: panics when
/// `MINISPOD_TEST_REQUIRE_KUBERNETES` is set but `MINISPOD_TEST_KUBECONFIG`
/// is not, so a CI job meant for a real cluster cannot pass on the stand-in.
pub fn require_kubernetes_if_asked() {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if set(REQUIRE_ENV) && !set(KUBECONFIG_ENV) {
        panic!(
            "{REQUIRE_ENV} is set but {KUBECONFIG_ENV} is not: this run must use a real cluster"
        );
    }
    if set(KUBECONFIG_ENV) && !set(CONTROL_PLANE_KUBECONFIG_ENV) {
        panic!(
            "{KUBECONFIG_ENV} is set but {CONTROL_PLANE_KUBECONFIG_ENV} is not: the control plane \
             under test needs its own identity (see README.md, Tests)"
        );
    }
}

/// A cluster for one test.
pub struct TestCluster {
    standin: Option<StandIn>,
    proxy: CutProxy,
    /// Direct access (fixtures, assertions).
    config: kube::Config,
    pub(crate) client: kube::Client,
    dir: tempfile::TempDir,
    kubeconfig_path: PathBuf,
    /// Suffix that keeps this test's names apart from other runs'.
    pub(crate) suffix: String,
    /// Whether the test expects the control plane to be refused requests.
    expect_forbidden: AtomicBool,
    pub(crate) created: std::sync::Mutex<crate::fixtures::Created>,
    /// The nodes fixtures created, which the fixture kubelet plays.
    pub(crate) nodes: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The fixture kubelet's task, once a node exists.
    pub(crate) kubelet: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// On a real cluster: this process's turn on it (see [`REAL_CLUSTER_TURN`]).
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// One test at a time on a real cluster. Every test's control plane watches
/// all the cluster's nodes, and retires (cordons, drains, deletes) a node
/// labelled with a worker id its database does not know, as it must for a
/// deleted worker: tests running side by side would retire each other's
/// nodes. A stand-in is each test's own, so stand-in tests still run in
/// parallel.
static REAL_CLUSTER_TURN: std::sync::LazyLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
    std::sync::LazyLock::new(Default::default);

fn host_and_port(server: &str) -> anyhow::Result<(String, String)> {
    let uri: http::Uri = server.parse().context("the cluster's server URL")?;
    let host = uri.host().context("the server URL has no host")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    let upstream = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok((host, upstream))
}

async fn client_for(kubeconfig: Kubeconfig) -> anyhow::Result<(kube::Config, kube::Client)> {
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .context("read the kubeconfig")?;
    // kube-rs retries 429 (a refused eviction) up to 15 times with backoff
    // growing to minutes; fixtures and assertions want the answer at once.
    config.default_retry = false;
    let client = kube::Client::try_from(config.clone()).context("build the kube client")?;
    Ok((config, client))
}

impl TestCluster {
    /// With `MINISPOD_TEST_KUBECONFIG` set: that real cluster (its current
    /// context). Otherwise a fresh stand-in. Both behind a cuttable proxy.
    pub async fn start() -> anyhow::Result<TestCluster> {
        require_kubernetes_if_asked();
        if let Some(path) = std::env::var_os(KUBECONFIG_ENV).filter(|v| !v.is_empty()) {
            return TestCluster::start_real(Path::new(&path)).await;
        }
        let dir = tempfile::tempdir().context("a directory for the kubeconfig")?;
        let kubeconfig_path = dir.path().join("kubeconfig");
        // The nodes' disks: local-path volumes get real directories here.
        let standin = StandIn::start_with(crate::Settings {
            storage_root: Some(dir.path().join("nodes")),
            ..crate::Settings::default()
        })
        .await?;
        let proxy = CutProxy::start(standin.addr().to_string()).await?;
        let proxied = standin.kubeconfig_with_token(
            Some(&format!("https://{}", proxy.addr())),
            standin.control_plane_token(),
        );
        std::fs::write(&kubeconfig_path, proxied).context("write the kubeconfig")?;
        let direct = Kubeconfig::from_yaml(&standin.kubeconfig(None))?;
        let (config, client) = client_for(direct).await?;
        apply_manifest(&client, RBAC_MANIFEST).await?;
        Ok(TestCluster {
            standin: Some(standin),
            proxy,
            config,
            client,
            dir,
            kubeconfig_path,
            suffix: crate::meta::generate_name(""),
            expect_forbidden: AtomicBool::new(false),
            created: Default::default(),
            nodes: Default::default(),
            kubelet: Default::default(),
            _turn: None,
        })
    }

    /// The cluster a kubeconfig file names (its current context), treated
    /// as a real cluster: what `start` does with `MINISPOD_TEST_KUBECONFIG`
    /// (the administrator's, for fixtures) and
    /// `MINISPOD_TEST_CONTROL_PLANE_KUBECONFIG` (the control plane's own).
    pub async fn start_real(kubeconfig: &Path) -> anyhow::Result<TestCluster> {
        let control_plane = std::env::var_os(CONTROL_PLANE_KUBECONFIG_ENV)
            .filter(|v| !v.is_empty())
            .with_context(|| format!("{CONTROL_PLANE_KUBECONFIG_ENV} is not set"))?;
        TestCluster::start_real_with(kubeconfig, Path::new(&control_plane)).await
    }

    /// A real cluster with an administrator's kubeconfig (fixtures,
    /// assertions; it applies the shipped RBAC manifest) and the control
    /// plane's own (what `kubeconfig_path` gives the control plane).
    pub async fn start_real_with(
        kubeconfig: &Path,
        control_plane: &Path,
    ) -> anyhow::Result<TestCluster> {
        let turn = REAL_CLUSTER_TURN.clone().lock_owned().await;
        let dir = tempfile::tempdir().context("a directory for the kubeconfig")?;
        let kubeconfig_path = dir.path().join("kubeconfig");
        let original = Kubeconfig::read_from(kubeconfig)
            .with_context(|| format!("read {}", kubeconfig.display()))?;
        let own = Kubeconfig::read_from(control_plane)
            .with_context(|| format!("read {}", control_plane.display()))?;
        let (config, client) = client_for(original).await?;
        apply_manifest(&client, RBAC_MANIFEST).await?;
        let customers_before = crate::fixtures::customer_namespaces(&client).await?;
        let (own_config, _) = client_for(own.clone()).await?;
        let (host, upstream) = host_and_port(&own_config.cluster_url.to_string())?;
        let proxy = CutProxy::start(upstream).await?;
        let proxied = proxied_kubeconfig(own, &host, &proxy)?;
        // JSON is YAML: kube reads it back as a kubeconfig.
        let text = serde_json::to_string_pretty(&proxied)?;
        std::fs::write(&kubeconfig_path, text).context("write the kubeconfig")?;
        Ok(TestCluster {
            standin: None,
            proxy,
            config,
            client,
            dir,
            kubeconfig_path,
            suffix: crate::meta::generate_name(""),
            expect_forbidden: AtomicBool::new(false),
            created: std::sync::Mutex::new(crate::fixtures::Created::with_customers_before(
                customers_before,
            )),
            nodes: Default::default(),
            kubelet: Default::default(),
            _turn: Some(turn),
        })
    }

    /// A kubeconfig file (in a temporary directory) that reaches the
    /// cluster through the proxy with the control plane's own identity (the
    /// ServiceAccount of the shipped RBAC manifest, not an administrator):
    /// what the control plane under test gets as `--kubeconfig`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// Where the stand-in keeps node `node`'s local-path volumes (one
    /// directory per volume, as `/var/lib/rancher/k3s/storage` on a K3s
    /// node); None on a real cluster.
    pub fn volume_root(&self, node: &str) -> Option<PathBuf> {
        self.standin.as_ref()?;
        Some(self.dir.path().join("nodes").join(node))
    }

    /// The temporary directory holding the kubeconfig (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client that reaches the cluster directly, past the proxy, with
    /// kube-rs' retry of 429/503/504 turned off (`Config::default_retry`) so
    /// a refused eviction is seen at once.
    pub async fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The configuration of the direct client.
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// Cut the proxy: close every proxied connection and refuse new ones.
    pub fn cut(&self) {
        self.proxy.cut();
    }

    /// Accept proxied connections again.
    pub fn restore(&self) {
        self.proxy.restore();
    }

    /// The stand-in, or None on a real cluster.
    pub fn standin(&self) -> Option<&StandIn> {
        self.standin.as_ref()
    }

    /// Whether this is a real cluster.
    pub fn is_real(&self) -> bool {
        self.standin.is_none()
    }

    /// The test expects the control plane to be refused requests: they no
    /// longer fail it when the cluster is dropped.
    pub fn expect_forbidden(&self) {
        self.expect_forbidden.store(true, Ordering::Relaxed);
    }

    /// The control plane's requests the stand-in refused with 403 so far
    /// (empty on a real cluster, which does not tell).
    pub fn forbidden_requests(&self) -> Vec<crate::Recorded> {
        self.standin
            .as_ref()
            .map(StandIn::forbidden_requests)
            .unwrap_or_default()
    }

    /// Panics, naming them, when the stand-in refused the control plane
    /// requests and the test did not expect it: a call the shipped RBAC
    /// does not allow fails the test that made it.
    pub fn assert_nothing_forbidden(&self) {
        if self.expect_forbidden.load(Ordering::Relaxed) {
            return;
        }
        let refused = self.forbidden_requests();
        if refused.is_empty() {
            return;
        }
        let list: Vec<String> = refused
            .iter()
            .take(10)
            .map(|r| format!("{} {}?{} -> {}", r.method, r.path, r.query, r.status))
            .collect();
        panic!(
            "the cluster refused {} request(s) of {} (is a permission missing from \
             deploy/kubernetes/control-plane-rbac.yaml?): {}",
            refused.len(),
            refused[0].user,
            list.join("; ")
        );
    }
}

/// Applies every object of a multi-document YAML manifest (server-side
/// apply, field manager `kubectl`, forced), as `kubectl apply
/// --server-side` would.
pub async fn apply_manifest(client: &kube::Client, manifest: &str) -> anyhow::Result<()> {
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(manifest).context("parse the manifest")?;
    for doc in documents.into_iter().filter(|d| d.is_object()) {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        let kind = doc["kind"].as_str().unwrap_or_default();
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            name,
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&doc),
        )
        .await
        .with_context(|| format!("apply {kind} {name}"))?;
    }
    Ok(())
}

/// The kubeconfig with its current cluster's server pointed at the proxy,
/// and `tls-server-name` set to the original host so certificates verify.
fn proxied_kubeconfig(
    mut kubeconfig: Kubeconfig,
    host: &str,
    proxy: &CutProxy,
) -> anyhow::Result<Kubeconfig> {
    let context_name = kubeconfig
        .current_context
        .clone()
        .context("the kubeconfig has no current-context")?;
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .context("the current context names no cluster")?;
    let cluster = kubeconfig
        .clusters
        .iter_mut()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_mut())
        .context("the current context's cluster is missing")?;
    cluster.server = Some(format!("https://{}", proxy.addr()));
    if cluster.tls_server_name.is_none() {
        cluster.tls_server_name = Some(host.to_string());
    }
    Ok(kubeconfig)
}
