//! Launching the workspace's own binaries as child processes: a free
//! loopback port for them, and where `cargo test --workspace` built them.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The workspace binary `name`, built beside the running test binary by
/// `cargo test --workspace` (tests live in `target/<profile>/deps`, binaries
/// one level up).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        bin.exists(),
        "{} is missing: run the workspace's tests (cargo test --workspace)",
        bin.display()
    );
    bin
}

/// `minispod-control-plane serve` on 127.0.0.1:`port` with its data in
/// `data` (and its database at `database_url`, else SQLite there), quiet
/// and killed when dropped: add flags, then spawn.
pub fn control_plane_command(
    data: &Path,
    database_url: Option<&str>,
    port: u16,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(workspace_bin("minispod-control-plane"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .args(database_url.iter().flat_map(|url| ["--database-url", url]))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd
}
