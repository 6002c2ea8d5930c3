//! What the benchmark examples share: the release binaries beside them, a
//! free port, the bench administrator, and authorised requests.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tonic::Request;

/// The administrator the benchmarks start the control plane with.
pub const ADMIN_EMAIL: &str = "bench@example.org";
/// Their password.
pub const ADMIN_PASSWORD: &str = "bench-password";

/// `target/release/<name>`, beside `target/release/examples/<this>`.
pub fn release_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .context("exe dir")?
        .join(name);
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: cargo build --release --bins",
        bin.display()
    );
    Ok(bin)
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `msg` with `authorization: Bearer <token>`.
pub fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}
