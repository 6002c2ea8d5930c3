//! What the benchmark examples share: the release binaries beside them, a
//! free port, the bench administrator, and authorised requests.

use std::path::{Path, PathBuf};

use anyhow::Context;

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

// A free loopback port and `authorization: Bearer <token>`, as the tests
// have them.
pub use minispod_testkit::{app::authed, process::free_port};
