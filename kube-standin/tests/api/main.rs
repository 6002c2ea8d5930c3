//! The stand-in through kube-rs, as the control plane will use it.

mod apply;
mod auth;
mod crud;
mod dumps;
mod eviction;
mod lifecycle;
mod logs;
mod policy;
mod proxy;
mod rbac;
mod real;
mod status;
mod watch;
mod workloads;

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use minispod_kube_standin::{Settings, StandIn};

/// A fresh stand-in with these settings and a client for it.
pub async fn standin_with(settings: Settings) -> (StandIn, kube::Client) {
    let standin = StandIn::start_with(settings)
        .await
        .expect("the stand-in starts");
    let kubeconfig = Kubeconfig::from_yaml(&standin.kubeconfig(None)).expect("a valid kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kube reads the kubeconfig");
    config.default_retry = false;
    let client = kube::Client::try_from(config).expect("a client");
    (standin, client)
}

/// A fresh stand-in with default settings and a client for it.
pub async fn standin() -> (StandIn, kube::Client) {
    standin_with(Settings::default()).await
}

/// Settings for fast tests: bookmarks every 200 ms.
pub fn quick() -> Settings {
    Settings {
        bookmark_interval: Duration::from_millis(200),
        ..Settings::default()
    }
}

/// The reason and code of a kube API error.
pub fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (String, u16, String) {
    match result {
        Err(kube::Error::Api(status)) => {
            (status.reason.clone(), status.code, status.message.clone())
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}
