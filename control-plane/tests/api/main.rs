//! Integration tests: the real server over TLS on a random port, a fresh
//! data dir per test, real clients.

mod access;
mod auth;
mod autoupdate;
mod catalog;
mod cluster;
mod console;
mod customer_notices;
mod digest;
mod domains;
mod gate;
mod history;
mod hostile;
mod mail;
mod notifications;
mod on_postgres;
mod refusals;
mod subscriptions;
mod transport;
mod upgrades;
mod users;
mod words;
mod workers;

/// The shared harness (`minispod-testkit`: `spawn_app`, `TempDir`, request
/// helpers) under the name the tests use.
mod helpers {
    pub use minispod_testkit::{TempDir, app::*};
}

use minispod_testkit::{raw_grpc, smtp};
