//! Integration tests: the real server over TLS on a random port, a fresh
//! data dir per test, real clients.

mod access;
mod auth;
mod catalog;
mod cluster;
mod console;
mod gate;
mod helpers;
mod history;
mod hostile;
mod mail;
mod notifications;
mod on_postgres;
#[path = "../common/raw_grpc.rs"]
mod raw_grpc;
mod refusals;
#[path = "../common/smtp.rs"]
mod smtp;
mod subscriptions;
mod transport;
mod users;
mod words;
mod workers;
