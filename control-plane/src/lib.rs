//! The MiniSpod control plane as a library, so tests start the real server.
//!
//! A folder per domain (`auth`, `users`, `catalog`, `workers`, `cluster`), each with
//! its service, logic and queries; cross-cutting pieces (`console`, `pki`,
//! `store`, `workqueue`, ...) at the top.
//! See ARCHITECTURE.md for the map.

pub mod api;
pub mod auth;
pub mod backups;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod console;
pub mod error;
pub mod history;
pub mod mail;
pub mod metrics;
pub mod nodes;
pub mod notifications;
pub mod pki;
pub mod rate_limit;
pub mod sealed;
pub mod startup;
pub mod store;
pub mod subscriptions;
pub mod telemetry;
pub mod transport;
pub mod users;
pub mod workers;
pub mod workqueue;

pub use startup::Application;
