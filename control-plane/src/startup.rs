//! Building and running the server: store, PKI, services, one port.
//!
//! Start-up comes in two halves. [`Application::build`] (`build.rs`) does
//! everything that can fail: open and migrate the store, load the CA, the
//! signing and sealing keys and the TLS material, bootstrap the
//! administrator, link the cluster, build every gRPC service
//! (`router.rs`) and bind the listeners; it logs "control plane listening"
//! last. [`Application::run_until`] (`serve.rs`) only runs what was built:
//! it starts the background tasks (`tasks.rs`, one `TaskTracker` and one
//! `CancellationToken`), serves until the shutdown future resolves, drains
//! in-flight calls and stops the tasks. The domains' settings are made from
//! the flags' groups in `settings.rs`; the bootstrap administrator is made
//! in `bootstrap.rs`; grpc.health.v1 is reported from `health.rs`.

mod bootstrap;
mod build;
mod health;
mod router;
mod serve;
mod settings;
mod tasks;

pub use self::{
    bootstrap::ADMIN_PASSWORD_FILE, build::Application, health::CLUSTER_HEALTH,
    router::message_limits, serve::shutdown_signal,
};
