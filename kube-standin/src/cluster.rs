//! `TestCluster`: what cluster tests run against — a real cluster when
//! `MINISPOD_TEST_KUBECONFIG` names one, a fresh stand-in otherwise — always
//! behind a proxy the test can cut.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::proxy::CutProxy;
use crate::standin::StandIn;

/// Names a real cluster's kubeconfig; unset: tests use a stand-in.
pub const KUBECONFIG_ENV: &str = "MINISPOD_TEST_KUBECONFIG";
/// When set, cluster tests must run against a real cluster.
pub const REQUIRE_ENV: &str = "MINISPOD_TEST_REQUIRE_KUBERNETES";

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
}

/// A cluster for one test.
pub struct TestCluster {
    standin: Option<StandIn>,
    proxy: CutProxy,
    /// Direct access (fixtures, assertions).
    config: kube::Config,
    client: kube::Client,
    dir: tempfile::TempDir,
    kubeconfig_path: PathBuf,
    /// Suffix that keeps this test's names apart from other runs'.
    pub(crate) suffix: String,
    pub(crate) created: std::sync::Mutex<crate::fixtures::Created>,
}

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
        let standin = StandIn::start().await?;
        let proxy = CutProxy::start(standin.addr().to_string()).await?;
        let proxied = standin.kubeconfig(Some(&format!("https://{}", proxy.addr())));
        std::fs::write(&kubeconfig_path, proxied).context("write the kubeconfig")?;
        let direct = Kubeconfig::from_yaml(&standin.kubeconfig(None))?;
        let (config, client) = client_for(direct).await?;
        Ok(TestCluster {
            standin: Some(standin),
            proxy,
            config,
            client,
            dir,
            kubeconfig_path,
            suffix: crate::meta::generate_name(""),
            created: Default::default(),
        })
    }

    /// The cluster a kubeconfig file names (its current context), treated
    /// as a real cluster: what `start` does with `MINISPOD_TEST_KUBECONFIG`.
    pub async fn start_real(kubeconfig: &Path) -> anyhow::Result<TestCluster> {
        let dir = tempfile::tempdir().context("a directory for the kubeconfig")?;
        let kubeconfig_path = dir.path().join("kubeconfig");
        let original = Kubeconfig::read_from(kubeconfig)
            .with_context(|| format!("read {}", kubeconfig.display()))?;
        let (config, client) = client_for(original.clone()).await?;
        let (host, upstream) = host_and_port(&config.cluster_url.to_string())?;
        let proxy = CutProxy::start(upstream).await?;
        let proxied = proxied_kubeconfig(original, &host, &proxy)?;
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
            created: Default::default(),
        })
    }

    /// A kubeconfig file (in a temporary directory) that reaches the
    /// cluster through the proxy: what the control plane under test gets as
    /// `--kubeconfig`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
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
